package volume

import (
	"crypto/hkdf"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// A volume's key is a key broker resource, kbs:///repo/type/tag: its bytes
// are the LUKS2 passphrase. With a query the resource is a JWK from which
// the passphrase is derived as Azure's encrypted-filesystem sidecar does
// (confidential-sidecar-containers, cmd/remotefs): an oct key's 32 bytes
// as they are; for an RSA key HKDF-SHA256 over the private exponent D,
// with the salt (hex) and label the sidecar's configuration names, 32 bytes.
//
//	kbs:///keyvault/keys/NAME?kdf=azure-encfs&salt=<hex>&label=<text>
//
// The query is part of the key URI, so the policy pins the salt and label
// with the resource.

// KDFAzureEncfs names the Azure encrypted-filesystem sidecar's derivation.
const KDFAzureEncfs = "azure-encfs"

// DefaultEncfsLabel is the sidecar's label when its configuration has none.
const DefaultEncfsLabel = "Symmetric Encryption Key"

// KeySpec is a parsed volume key URI.
type KeySpec struct {
	// Resource is kbs:///repo/type/tag without the query.
	Resource string
	// KDF is "" (the resource is the passphrase) or KDFAzureEncfs.
	KDF   string
	Salt  []byte
	Label string
}

// ParseKeyURI parses a volume's key URI.
func ParseKeyURI(uri string) (*KeySpec, error) {
	base, q, hasQ := strings.Cut(uri, "?")
	if !strings.HasPrefix(base, "kbs:///") {
		return nil, fmt.Errorf("key %q: must be a key broker resource kbs:///repo/type/tag", uri)
	}
	ks := &KeySpec{Resource: base}
	if !hasQ {
		return ks, nil
	}
	v, err := url.ParseQuery(q)
	if err != nil {
		return nil, fmt.Errorf("key %q: the query: %w", uri, err)
	}
	for k, vals := range v {
		if len(vals) != 1 {
			return nil, fmt.Errorf("key %q: %s is given %d times", uri, k, len(vals))
		}
		switch k {
		case "kdf":
			if vals[0] != KDFAzureEncfs {
				return nil, fmt.Errorf("key %q: kdf %q is not known; use %s", uri, vals[0], KDFAzureEncfs)
			}
			ks.KDF = vals[0]
		case "salt":
			if ks.Salt, err = hex.DecodeString(vals[0]); err != nil {
				return nil, fmt.Errorf("key %q: salt must be hex: %w", uri, err)
			}
		case "label":
			ks.Label = vals[0]
		default:
			return nil, fmt.Errorf("key %q: %q is not a key parameter (kdf, salt, label)", uri, k)
		}
	}
	if ks.KDF == "" {
		return nil, fmt.Errorf("key %q: salt and label need kdf=%s", uri, KDFAzureEncfs)
	}
	if ks.Label == "" {
		ks.Label = DefaultEncfsLabel
	}
	return ks, nil
}

// Passphrase turns the resource's bytes into the LUKS2 passphrase.
func (ks *KeySpec) Passphrase(resource []byte) ([]byte, error) {
	if ks.KDF == "" {
		return append([]byte(nil), resource...), nil
	}
	var k jose.JSONWebKey
	if err := json.Unmarshal(resource, &k); err != nil {
		return nil, fmt.Errorf("the key is not a JWK: %w", err)
	}
	switch key := k.Key.(type) {
	case []byte:
		if len(key) != 32 {
			return nil, fmt.Errorf("an oct key for %s must be 32 bytes, not %d", KDFAzureEncfs, len(key))
		}
		return append([]byte(nil), key...), nil
	case *rsa.PrivateKey:
		out, err := hkdf.Key(sha256.New, key.D.Bytes(), ks.Salt, ks.Label, 32)
		if err != nil {
			return nil, fmt.Errorf("derive the volume key: %w", err)
		}
		return out, nil
	case *rsa.PublicKey:
		return nil, errors.New("the key is an RSA public key; the broker must hold the private key")
	}
	return nil, fmt.Errorf("a %T key cannot give a volume key; use an oct or RSA key", k.Key)
}
