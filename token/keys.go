package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Signer issues tokens with the newest of its keys and publishes the public
// keys (JWKS), keeping retired ones until every token they signed expired.
type Signer struct {
	path string // 0600 file of private keys ("" = in memory)
	alg  jose.SignatureAlgorithm
	ttl  time.Duration

	mu      sync.Mutex
	keys    []*signingKey // oldest first; the last one signs
	signers map[string]jose.Signer
}

type signingKey struct {
	Kid     string            `json:"kid"`
	Created time.Time         `json:"created"`
	Retired time.Time         `json:"retired,omitzero"`
	Key     *ecdsa.PrivateKey `json:"-"`
	JWK     json.RawMessage   `json:"jwk"`
}

// NewSigner loads (or creates) the signing keys in path (0600). alg is ES256
// or ES384; ttl is the lifetime of the tokens it signs.
func NewSigner(path string, alg jose.SignatureAlgorithm, ttl time.Duration) (*Signer, error) {
	if alg != jose.ES256 && alg != jose.ES384 {
		return nil, fmt.Errorf("token signing algorithm %s: want ES256 or ES384", alg)
	}
	s := &Signer{path: path, alg: alg, ttl: ttl, signers: map[string]jose.Signer{}}
	if path != "" {
		if b, err := os.ReadFile(path); err == nil {
			if err := s.load(b); err != nil {
				return nil, fmt.Errorf("token keys %s: %w", path, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if len(s.keys) == 0 {
		if err := s.Rotate(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Signer) load(b []byte) error {
	var keys []*signingKey
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	for _, k := range keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(k.JWK); err != nil {
			return err
		}
		priv, ok := jwk.Key.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("key %s is not an ECDSA private key", k.Kid)
		}
		k.Key = priv
	}
	s.keys = keys
	return nil
}

func (s *Signer) saveLocked() error {
	if s.path == "" {
		return nil
	}
	b, err := json.Marshal(s.keys)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

// Rotate makes a new signing key; the previous one is retired and stays in
// the JWKS until the tokens it signed expired.
func (s *Signer) Rotate() error { return s.RotateWith(nil) }

// RotateWith rotates like Rotate, but first hands publish the public keys
// the signer will have (the new one included): the new key signs only once
// publish returned nil, so a relying party that reads the published keys
// knows it before any token it signed exists. When publish fails nothing
// changes.
func (s *Signer) RotateWith(publish func(jose.JSONWebKeySet) error) error {
	curve := elliptic.P256()
	if s.alg == jose.ES384 {
		curve = elliptic.P384()
	}
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return err
	}
	jwk := jose.JSONWebKey{Key: priv, Algorithm: string(s.alg), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return err
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)[:16]
	raw, err := jwk.MarshalJSON()
	if err != nil {
		return err
	}
	if publish != nil {
		set := s.JWKS()
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &priv.PublicKey, KeyID: jwk.KeyID, Algorithm: string(s.alg), Use: "sig"})
		if err := publish(set); err != nil {
			return fmt.Errorf("publish the new signing key: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if n := len(s.keys); n > 0 {
		s.keys[n-1].Retired = now
	}
	s.keys = append(s.keys, &signingKey{Kid: jwk.KeyID, Created: now, Key: priv, JWK: raw})
	s.pruneLocked(now)
	return s.saveLocked()
}

// pruneLocked drops retired keys whose tokens have all expired.
func (s *Signer) pruneLocked(now time.Time) {
	kept := s.keys[:0]
	for i, k := range s.keys {
		if i == len(s.keys)-1 || k.Retired.IsZero() || now.Before(k.Retired.Add(s.ttl+time.Minute)) {
			kept = append(kept, k)
		}
	}
	s.keys = kept
}

// KeyID is the id of the key that signs now.
func (s *Signer) KeyID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1].Kid
}

// TTL is the lifetime of the tokens this signer issues.
func (s *Signer) TTL() time.Duration { return s.ttl }

// JWKS returns the public keys of every key whose tokens may still be valid.
func (s *Signer) JWKS() jose.JSONWebKeySet {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(time.Now())
	var set jose.JSONWebKeySet
	for _, k := range s.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.Key.PublicKey, KeyID: k.Kid, Algorithm: string(s.alg), Use: "sig"})
	}
	return set
}

// Sign signs an EAR with the current key.
func (s *Signer) Sign(claims *EAR) (string, error) { return s.SignClaims(claims) }

// SignClaims signs any JSON claims set (an MAA-shaped token, say) with the
// current key.
func (s *Signer) SignClaims(claims any) (string, error) {
	s.mu.Lock()
	k := s.keys[len(s.keys)-1]
	sig, ok := s.signers[k.Kid]
	if !ok {
		// The header names the key twice: by kid (for a JWKS lookup) and
		// as a public JWK (RFC 7515 "jwk"), which Trustee-style relying
		// parties read. Neither is a reason to trust the token: a relying
		// party checks the key against the issuer's JWKS or a pinned key.
		pub := jose.JSONWebKey{Key: &k.Key.PublicKey, KeyID: k.Kid, Algorithm: string(s.alg), Use: "sig"}
		var err error
		sig, err = jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: k.Key},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.Kid).WithHeader(jose.HeaderKey("jwk"), pub))
		if err != nil {
			s.mu.Unlock()
			return "", err
		}
		s.signers[k.Kid] = sig
	}
	s.mu.Unlock()
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := sig.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Thumbprint is the SHA-256 of a JWK's canonical form, base64url.
func Thumbprint(jwk map[string]any) (string, error) {
	b, err := json.Marshal(jwk)
	if err != nil {
		return "", err
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return "", err
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}
