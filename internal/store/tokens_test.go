package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/inuse-dev/inuse/internal/redistest"
)

func TestTokens(t *testing.T) {
	st, err := Open(redistest.Start(t).URL())
	require.NoError(t, err)
	defer st.Close()
	tokens := NewTokens(st)
	now := time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)
	tokens.now = func() time.Time { return now }

	expiries := []struct {
		spec string
		want time.Time
	}{
		{"1mo", now.AddDate(0, 1, 0)},
		{"3mo", now.AddDate(0, 3, 0)},
		{"6mo", now.AddDate(0, 6, 0)},
		{"1y", time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC)},
	}
	var secrets []string
	for _, tc := range expiries {
		t.Run(tc.spec, func(t *testing.T) {
			tok, secret, err := tokens.Create(t.Context(), "t "+tc.spec, tc.spec)
			require.NoError(t, err)
			require.Equal(t, tc.want, tok.Expires)
			secrets = append(secrets, secret)
			got, err := tokens.Verify(t.Context(), secret)
			require.NoError(t, err)
			require.Equal(t, tok.ID, got.ID)
		})
	}
	_, _, err = tokens.Create(t.Context(), "x", "2y")
	require.ErrorIs(t, err, ErrBadExpiry)

	// Only hashes are stored: no secret appears in any token key.
	for _, key := range []string{TokensKey, TokenHashesKey, TokenLastUsedKey} {
		h, err := st.rdb.HGetAll(t.Context(), key).Result()
		require.NoError(t, err)
		dump := fmt.Sprint(h)
		for _, s := range secrets {
			require.NotContains(t, dump, s)
			require.NotContains(t, dump, strings.TrimPrefix(s, secretPrefix))
		}
	}

	list, err := tokens.List(t.Context())
	require.NoError(t, err)
	require.Len(t, list, 4)
	var first Token // the 1mo one, secrets[0]
	for _, tok := range list {
		if tok.Name == "t 1mo" {
			first = tok
		}
	}

	// Expired: refused; renewed: accepted again.
	now = now.AddDate(0, 1, 0)
	_, err = tokens.Verify(t.Context(), secrets[0])
	require.ErrorIs(t, err, ErrTokenExpired)
	renewed, err := tokens.Renew(t.Context(), first.ID, "3mo")
	require.NoError(t, err)
	require.Equal(t, now.AddDate(0, 3, 0), renewed.Expires)
	_, err = tokens.Verify(t.Context(), secrets[0])
	require.NoError(t, err)

	require.NoError(t, tokens.Delete(t.Context(), first.ID))
	_, err = tokens.Verify(t.Context(), secrets[0])
	require.ErrorIs(t, err, ErrTokenInvalid)
	require.ErrorIs(t, tokens.Delete(t.Context(), first.ID), ErrTokenNotFound)
	_, err = tokens.Renew(t.Context(), first.ID, "1y")
	require.ErrorIs(t, err, ErrTokenNotFound)
	_, err = tokens.Verify(t.Context(), secrets[1][:len(secrets[1])-1])
	require.ErrorIs(t, err, ErrTokenInvalid)
}
