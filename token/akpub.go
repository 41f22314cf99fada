package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// NewKeyAttestation encodes a public JWK (EC, RSA or OKP Ed25519) as an
// EAR key attestation.
func NewKeyAttestation(jwk map[string]any) (*KeyAttestation, error) {
	b, err := json.Marshal(jwk)
	if err != nil {
		return nil, err
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("not a JWK: %w", err)
	}
	if !k.IsPublic() {
		return nil, errors.New("the key attested must be a public key")
	}
	switch k.Key.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("unsupported key type %T", k.Key)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Key)
	if err != nil {
		return nil, fmt.Errorf("encode the public key: %w", err)
	}
	return &KeyAttestation{PublicKey: base64.RawURLEncoding.EncodeToString(der)}, nil
}

// Key parses the attested public key.
func (k *KeyAttestation) Key() (crypto.PublicKey, error) {
	if k == nil || k.PublicKey == "" {
		return nil, errors.New("no attested key")
	}
	der, err := base64.RawURLEncoding.DecodeString(k.PublicKey)
	if err != nil {
		return nil, fmt.Errorf(`"akpub" is not base64url: %w`, err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf(`"akpub" is not a DER SubjectPublicKeyInfo: %w`, err)
	}
	return pub, nil
}

// JWK returns the attested key as a public JWK.
func (k *KeyAttestation) JWK() (map[string]any, error) {
	pub, err := k.Key()
	if err != nil {
		return nil, err
	}
	b, err := jose.JSONWebKey{Key: pub}.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}
