package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// JWKS is a URL (http(s)://...) or a file with the issuer's keys.
	JWKS string
	// KeySet, when set, is used instead of fetching JWKS.
	KeySet *jose.JSONWebKeySet
	// Keys, when set, gives the keys by the token's kid (a cached remote
	// JWKS that refetches on an unknown kid); it comes before KeySet.
	Keys KeySource
	// Issuer and Audience, when set, must match.
	Issuer, Audience string
	// Nonce, when set, must be the token's eat_nonce.
	Nonce string
	// Now is the verification time (zero: now).
	Now time.Time
	// Client fetches the JWKS URL (nil: a default client).
	Client *http.Client
}

// ErrInvalid marks a token that failed verification.
var ErrInvalid = errors.New("invalid token")

// MaxTokenBytes bounds a token.
const MaxTokenBytes = 64 << 10

// LoadKeySet reads a JWKS from a URL or a file.
func LoadKeySet(ctx context.Context, src string, c *http.Client) (*jose.JSONWebKeySet, error) {
	var b []byte
	var err error
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		if c == nil {
			c = &http.Client{Timeout: 10 * time.Second}
		}
		req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if rerr != nil {
			return nil, rerr
		}
		resp, derr := c.Do(req)
		if derr != nil {
			return nil, fmt.Errorf("fetch JWKS %s: %w", src, derr)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetch JWKS %s: %s", src, resp.Status)
		}
		b, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	} else {
		b, err = os.ReadFile(src)
	}
	if err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", src, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("JWKS %s: %w", src, err)
	}
	return &set, nil
}

// Verify checks a token's signature against the issuer's keys (by kid), its
// profile, expiry, issuer, audience and nonce, and returns its claims.
func Verify(ctx context.Context, raw string, o VerifyOptions) (*EAR, error) {
	if len(raw) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(raw), MaxTokenBytes)
	}
	tok, err := jwt.ParseSigned(strings.TrimSpace(raw), []jose.SignatureAlgorithm{jose.ES256, jose.ES384})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: want one signature", ErrInvalid)
	}
	kid := tok.Headers[0].KeyID
	set := o.KeySet
	switch {
	case o.Keys != nil:
		if set, err = o.Keys.KeySet(ctx, kid); err != nil {
			return nil, err
		}
	case set == nil:
		if o.JWKS == "" {
			return nil, errors.New("no JWKS to verify the token with")
		}
		if set, err = LoadKeySet(ctx, o.JWKS, o.Client); err != nil {
			return nil, err
		}
	}
	keys := set.Key(kid)
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: signed with key %q, which the issuer's JWKS does not hold (another issuer, or an expired key)", ErrInvalid, kid)
	}
	var ear EAR
	var std jwt.Claims
	if err := tok.Claims(keys[0].Key, &ear, &std); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalid, err)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	exp := jwt.Expected{Issuer: o.Issuer, Time: now}
	if o.Audience != "" {
		exp.AnyAudience = jwt.Audience{o.Audience}
	}
	if err := std.ValidateWithLeeway(exp, 0); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if ear.Expiry == 0 {
		return nil, fmt.Errorf("%w: no expiry", ErrInvalid)
	}
	if ear.Profile != Profile {
		return nil, fmt.Errorf("%w: eat_profile %q, want %q", ErrInvalid, ear.Profile, Profile)
	}
	if o.Nonce != "" && ear.Nonce != o.Nonce {
		return nil, fmt.Errorf("%w: eat_nonce %q, expected %q", ErrInvalid, ear.Nonce, o.Nonce)
	}
	if _, ok := ear.Submods["cpu0"]; !ok {
		return nil, fmt.Errorf("%w: no cpu0 appraisal", ErrInvalid)
	}
	return &ear, nil
}
