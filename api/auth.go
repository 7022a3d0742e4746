package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/inuse-dev/inuse/internal/store"
)

// principal is who made a request; the secret never leaves auth.
type principal struct {
	id string // token id, or "admin"
}

// authorize checks the Bearer credential a route needs.
func (s *Server) authorize(r *http.Request, need access) (principal, error) {
	if need == public {
		return principal{}, nil
	}
	secret, ok := bearer(r)
	if !ok {
		return principal{}, errorf(http.StatusUnauthorized, "missing bearer token")
	}
	if s.admin.Match(secret) {
		return principal{id: "admin"}, nil
	}
	tok, err := s.tokens.Verify(r.Context(), secret)
	switch {
	case errors.Is(err, store.ErrTokenExpired):
		return principal{}, errorf(http.StatusUnauthorized, "token expired")
	case errors.Is(err, store.ErrTokenInvalid):
		return principal{}, errorf(http.StatusUnauthorized, "invalid token")
	case err != nil:
		return principal{}, err
	}
	if need == admin {
		return principal{id: tok.ID}, errorf(http.StatusForbidden, "integration tokens are read-only and cannot manage tokens")
	}
	return principal{id: tok.ID}, nil
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret = strings.TrimSpace(secret)
	return secret, secret != ""
}

// Admin is the admin credential: a configured secret, held as its hash.
type Admin struct{ hash [32]byte }

// NewAdmin returns the admin credential for secret; an empty secret
// means none, and every admin request is refused.
func NewAdmin(secret string) *Admin {
	if secret == "" {
		return nil
	}
	return &Admin{hash: sha256.Sum256([]byte(secret))}
}

// Match reports whether secret is the admin credential, in constant time.
// Hashing first makes the comparison independent of the secrets' lengths.
func (a *Admin) Match(secret string) bool {
	if a == nil {
		return false
	}
	h := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(h[:], a.hash[:]) == 1
}
