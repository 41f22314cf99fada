// Package protocol is the wire side of the KBS protocol that clients need:
// the request and answer bodies, resource paths and URIs, and admin
// tokens. It is a leaf: a client (the agent inside the TEE) links it
// without the broker, its store or the evidence verifiers.
package protocol

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Version is the KBS protocol version spoken.
const Version = "0.4.0"

// AuthRequest is the body of POST /kbs/v0/auth.
type AuthRequest struct {
	Version     string `json:"version"`
	TEE         string `json:"tee"`
	ExtraParams any    `json:"extra-params"`
}

// Challenge is the answer to auth.
type Challenge struct {
	Nonce       string `json:"nonce"`
	ExtraParams any    `json:"extra-params"`
}

// AttestRequest is the body of POST /kbs/v0/attest.
type AttestRequest struct {
	InitData    json.RawMessage `json:"init-data,omitempty"`
	RuntimeData RuntimeData     `json:"runtime-data"`
	// TEEEvidence is the evidence envelope, as a JSON object or a string.
	TEEEvidence json.RawMessage `json:"tee-evidence"`
}

// RuntimeData binds the nonce and the TEE's key into the evidence.
type RuntimeData struct {
	Nonce     string         `json:"nonce"`
	TEEPubKey map[string]any `json:"tee-pubkey"`
}

var partRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// ResourcePath checks the three parts of a resource path and joins them.
func ResourcePath(repo, typ, tag string) (string, error) {
	for _, p := range []string{repo, typ, tag} {
		if !partRE.MatchString(p) || p == "." || p == ".." {
			return "", fmt.Errorf("resource path %q: each part must be 1-128 of [A-Za-z0-9_.-], not \".\" or \"..\"", repo+"/"+typ+"/"+tag)
		}
	}
	return repo + "/" + typ + "/" + tag, nil
}

// ParseURI parses kbs:///repo/type/tag (or kbs://host/repo/type/tag, or
// repo/type/tag).
func ParseURI(uri string) (repo, typ, tag string, err error) {
	p := strings.TrimPrefix(strings.TrimPrefix(uri, "kbs://"), "/")
	if i := strings.Index(p, "/"); strings.HasPrefix(uri, "kbs://") && !strings.HasPrefix(uri, "kbs:///") && i >= 0 {
		p = p[i+1:] // kbs://host/repo/type/tag
	}
	parts := strings.Split(p, "/")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("resource %q: want kbs:///repo/type/tag", uri)
	}
	if _, err := ResourcePath(parts[0], parts[1], parts[2]); err != nil {
		return "", "", "", err
	}
	return parts[0], parts[1], parts[2], nil
}

// AdminToken makes an admin bearer JWT (EdDSA, subject "admin") valid for
// five minutes.
func AdminToken(key ed25519.PrivateKey) (string, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	var jti [8]byte
	_, _ = rand.Read(jti[:])
	return jwt.Signed(sig).Claims(jwt.Claims{IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		ID: base64.RawURLEncoding.EncodeToString(jti[:]), Subject: "admin"}).Serialize()
}

// Keys addressed as Azure Key Vault addresses them (the in-pod SKR API's
// /key/release, the encrypted-filesystem sidecar's key.kid) are the
// resources keyvault/keys/<name>.
const (
	KeyVaultRepo = "keyvault"
	KeyVaultType = "keys"
)

var keyVaultNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)

// KeyVaultName takes a key name from a kid: "name", or
// "https://<vault>/keys/<name>[/<version>]".
func KeyVaultName(kid string) (string, error) {
	name := kid
	if i := strings.Index(kid, "/keys/"); i >= 0 {
		name, _, _ = strings.Cut(kid[i+len("/keys/"):], "/")
	}
	if !keyVaultNameRE.MatchString(name) {
		return "", fmt.Errorf("kid %q: a key name is 1-127 letters, digits and dashes (or https://<vault>/keys/<name>[/<version>])", kid)
	}
	return name, nil
}

// ResourceVersion is one version of a resource, as the admin API lists them.
type ResourceVersion struct {
	N        int  `json:"version"`
	Disabled bool `json:"disabled"`
	// OneShot versions are released once; Released says that happened.
	OneShot  bool `json:"one_shot,omitempty"`
	Released bool `json:"released,omitempty"`
}

// PutResponse answers an admin put (POST /kbs/v0/resource/PATH).
type PutResponse struct {
	Resource string `json:"resource"` // kbs:///PATH
	Version  int    `json:"version"`
	OneShot  bool   `json:"one_shot"`
	// Replayed: the put's Idempotency-Key named this version, stored by
	// an earlier send of the same put; nothing was stored now.
	Replayed bool `json:"replayed,omitempty"`
}

// AdminKey is an admin key as the admin API lists and takes it
// (GET|POST /kbs/v0/admin/keys).
type AdminKey struct {
	Name string `json:"name"`
	// PublicKey is the PEM "PUBLIC KEY" (PKIX) of the Ed25519 key.
	PublicKey string    `json:"public_key"`
	Added     time.Time `json:"added,omitzero"`
}
