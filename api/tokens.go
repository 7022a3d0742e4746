package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/inuse-dev/inuse/internal/store"
)

// TokenRequest creates or renews a token.
type TokenRequest struct {
	Name    string `json:"name,omitempty"`
	Expires string `json:"expires"`
}

// CreatedToken is a new token with its secret: the only time it is shown.
type CreatedToken struct {
	store.Token
	Secret string `json:"secret"`
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	if _, err := only(r); err != nil {
		return err
	}
	toks, err := s.tokens.List(r.Context())
	if err != nil {
		return err
	}
	list := tokenList{Items: toks}
	if s.tls != nil {
		info := s.tls.tlsInfo()
		list.TLS = &info
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// tokenList is the answer of GET /api/v1/tokens: the tokens, and the
// certificate an integration must trust to use them (absent over plain
// HTTP).
type tokenList struct {
	Items []store.Token `json:"items"`
	TLS   *TLSInfo      `json:"tls,omitempty"`
}

func (s *Server) createTokenHandler(w http.ResponseWriter, r *http.Request) error {
	var req TokenRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if !store.ValidTokenName(req.Name) {
		return errorf(http.StatusBadRequest, "name must be 1 to %d printable characters", store.MaxTokenName)
	}
	if _, err := store.ExpiryAfter(time.Now(), req.Expires); err != nil {
		return errBadExpiry()
	}
	tok, secret, err := s.tokens.Create(r.Context(), req.Name, req.Expires)
	if err != nil {
		return err
	}
	s.log.Info("token created", "token_id", tok.ID, "token_name", tok.Name, "expires", tok.Expires)
	writeJSON(w, http.StatusCreated, CreatedToken{Token: tok, Secret: secret})
	return nil
}

func errBadExpiry() error {
	return errorf(http.StatusBadRequest, "expires must be one of %s", strings.Join(store.Expiries, ", "))
}

func (s *Server) renewToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !store.ValidTokenID(id) {
		return errorf(http.StatusNotFound, "no such token")
	}
	var req TokenRequest
	if err := s.decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Name != "" {
		return errorf(http.StatusBadRequest, "renew takes only expires")
	}
	if _, err := store.ExpiryAfter(time.Now(), req.Expires); err != nil {
		return errBadExpiry()
	}
	tok, err := s.tokens.Renew(r.Context(), id, req.Expires)
	if errors.Is(err, store.ErrTokenNotFound) {
		return errorf(http.StatusNotFound, "no such token")
	}
	if err != nil {
		return err
	}
	s.log.Info("token renewed", "token_id", tok.ID, "expires", tok.Expires)
	writeJSON(w, http.StatusOK, tok)
	return nil
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if !store.ValidTokenID(id) {
		return errorf(http.StatusNotFound, "no such token")
	}
	err := s.tokens.Delete(r.Context(), id)
	if errors.Is(err, store.ErrTokenNotFound) {
		return errorf(http.StatusNotFound, "no such token")
	}
	if err != nil {
		return err
	}
	s.log.Info("token deleted", "token_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
