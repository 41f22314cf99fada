package kbs

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

// A resource leaves the broker as a flattened JWE (RFC 7516 §7.2.2)
// encrypted to the TEE's key with A256GCM: ECDH-ES+A256KW for EC keys,
// RSA-OAEP-256 for RSA keys. The protected header is written in canonical
// form — members sorted at every level, no whitespace — because stock KBS
// clients (guest-components) rebuild the AEAD's additional data by
// re-serialising the header they parsed, with sorted keys: a header in any
// other order decrypts only in clients that keep the bytes they received.

type flatJWE struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

var b64 = base64.RawURLEncoding

// jweKeyOK says whether sealJWE can encrypt to pub, before anything is
// released to it.
func jweKeyOK(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("an RSA key of %d bits; at least 2048 are needed", k.N.BitLen())
		}
		return nil
	}
	return fmt.Errorf("cannot encrypt to a %T key; the TEE key must be EC or RSA", pub)
}

// sealJWE encrypts plaintext to pub.
func sealJWE(pub crypto.PublicKey, plaintext []byte) ([]byte, error) {
	cek := make([]byte, 32)
	defer clear(cek)
	if _, err := rand.Read(cek); err != nil {
		return nil, err
	}
	var header, wrapped []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		eph, err := ecdsa.GenerateKey(k.Curve, rand.Reader)
		if err != nil {
			return nil, err
		}
		kek := josecipher.DeriveECDHES(string(jose.ECDH_ES_A256KW), nil, nil, eph, k, 32)
		block, err := aes.NewCipher(kek)
		clear(kek)
		if err != nil {
			return nil, err
		}
		if wrapped, err = josecipher.KeyWrap(block, cek); err != nil {
			return nil, err
		}
		pt, err := eph.PublicKey.Bytes() // 0x04 || X || Y
		if err != nil {
			return nil, err
		}
		size := (len(pt) - 1) / 2
		x, y := pt[1:1+size], pt[1+size:]
		// encoding/json writes map keys sorted: the canonical form.
		header, err = json.Marshal(map[string]any{"alg": string(jose.ECDH_ES_A256KW), "enc": string(jose.A256GCM),
			"epk": map[string]string{"crv": k.Curve.Params().Name, "kty": "EC", "x": b64.EncodeToString(x), "y": b64.EncodeToString(y)}})
		if err != nil {
			return nil, err
		}
	case *rsa.PublicKey:
		var err error
		if wrapped, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, k, cek, nil); err != nil {
			return nil, err
		}
		header, _ = json.Marshal(map[string]string{"alg": string(jose.RSA_OAEP_256), "enc": string(jose.A256GCM)})
	default:
		return nil, fmt.Errorf("cannot encrypt to a %T key; the TEE key must be EC or RSA", pub)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	protected := b64.EncodeToString(header)
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	n := len(sealed) - gcm.Overhead()
	return json.Marshal(flatJWE{Protected: protected, EncryptedKey: b64.EncodeToString(wrapped), IV: b64.EncodeToString(iv),
		Ciphertext: b64.EncodeToString(sealed[:n]), Tag: b64.EncodeToString(sealed[n:])})
}

// jwkKey parses a public JWK.
func jwkKey(jwk map[string]any) (crypto.PublicKey, error) {
	b, _ := json.Marshal(jwk)
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("TEE public key: %w", err)
	}
	if !k.IsPublic() {
		return nil, errors.New("TEE public key: not a public key")
	}
	return k.Key, nil
}

// EncryptTo encrypts data to a public JWK as the broker does a resource: a
// flattened JWE with a canonical protected header (A256GCM;
// ECDH-ES+A256KW for EC keys, RSA-OAEP-256 for RSA keys).
func EncryptTo(jwk map[string]any, data []byte) ([]byte, error) {
	pub, err := jwkKey(jwk)
	if err != nil {
		return nil, err
	}
	return sealJWE(pub, data)
}
