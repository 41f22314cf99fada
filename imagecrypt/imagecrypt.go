// Package imagecrypt decrypts (inside the TEE) and encrypts (for `cocoon
// image encrypt`) OCI image layers in ocicrypt's format, the one skopeo,
// buildah, ctr-enc and Confidential Containers use: a layer of media type
// …+encrypted is AES-256-CTR with HMAC-SHA256 under a fresh layer key; the
// key (ocicrypt's "private options") is wrapped in the layer's
// annotations, for a JWE recipient (org.opencontainers.image.enc.keys.jwe)
// and/or for a key in a key broker (…keys.provider.attestation-agent,
// Confidential Containers' annotation packet: the key id is a kbs:///
// resource, the wrap AES-256-GCM).
//
// Only ocicrypt's blockcipher and JWE key wrapper are used: its key
// provider protocol (gRPC or a command) and its PGP/PKCS#7/PKCS#11
// wrappers stay out of the agent.
package imagecrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap/jwe"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Layer annotations of ocicrypt.
const (
	AnnotationProvider = "org.opencontainers.image.enc.keys.provider.attestation-agent"
	AnnotationJWE      = "org.opencontainers.image.enc.keys.jwe"
	AnnotationPubOpts  = "org.opencontainers.image.enc.pubopts"
	// EncryptedSuffix ends an encrypted layer's media type.
	EncryptedSuffix = "+encrypted"
)

// Bounds of what an image's annotations can make the agent parse.
const (
	MaxAnnotationBytes = 64 << 10
	MaxWrappedKeys     = 8
	// MaxOptsBytes bounds a layer's unwrapped private options (a 32-byte
	// key, a nonce and a digest in JSON).
	MaxOptsBytes = 4 << 10
)

// ErrNoKey means no wrapped key of the layer could be unwrapped with the
// keys at hand.
var ErrNoKey = errors.New("no key to decrypt the layer")

// Encrypted says whether a layer descriptor is an encrypted layer.
func Encrypted(d v1.Descriptor) bool {
	return strings.HasSuffix(string(d.MediaType), EncryptedSuffix)
}

// Packet is Confidential Containers' annotation packet (its version 0.1.0
// and the older form without version and provider): the layer's private
// options, AES-256-GCM-wrapped under the key the broker holds at Kid.
type Packet struct {
	Version     string `json:"version,omitempty"`
	Kid         string `json:"kid"`
	WrappedData string `json:"wrapped_data"`
	Provider    string `json:"provider,omitempty"`
	IV          string `json:"iv"`
	WrapType    string `json:"wrap_type"`
	// ProviderSettings and Annotations are the encrypter's; cocoon
	// neither writes nor needs them.
	ProviderSettings map[string]any `json:"provider_settings,omitempty"`
	Annotations      map[string]any `json:"annotations,omitempty"`
}

// ParsePacket reads a layer's provider.attestation-agent annotation: one
// base64 packet (ocicrypt joins several with commas; the first that parses
// as a KBS packet is taken).
func ParsePacket(annotation string) (*Packet, error) {
	if len(annotation) > MaxAnnotationBytes {
		return nil, fmt.Errorf("key annotation is %d bytes, more than %d", len(annotation), MaxAnnotationBytes)
	}
	parts := strings.Split(annotation, ",")
	if len(parts) > MaxWrappedKeys {
		return nil, fmt.Errorf("key annotation holds %d wrapped keys, more than %d", len(parts), MaxWrappedKeys)
	}
	var errs []error
	for _, part := range parts {
		p, err := parsePacket(part)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func parsePacket(b64 string) (*Packet, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("key annotation is not base64: %w", err)
	}
	var p Packet
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("key annotation: %w", err)
	}
	switch {
	case p.Version != "" && p.Version != "0.1.0":
		return nil, fmt.Errorf("key annotation version %q is not 0.1.0", p.Version)
	case p.Provider != "" && p.Provider != "kbs":
		return nil, fmt.Errorf("key annotation provider %q: only kbs is supported", p.Provider)
	case !strings.HasPrefix(p.Kid, "kbs:///"):
		return nil, fmt.Errorf("key annotation kid %q is not a kbs:/// resource", p.Kid)
	case p.WrapType != "A256GCM":
		return nil, fmt.Errorf("key annotation wrap_type %q: only A256GCM is supported", p.WrapType)
	}
	return &p, nil
}

// Unwrap opens the packet's wrapped options with the key-encryption key
// the broker released.
func (p *Packet) Unwrap(kek []byte) ([]byte, error) {
	iv, err := base64.StdEncoding.DecodeString(p.IV)
	if err != nil {
		return nil, fmt.Errorf("key annotation iv: %w", err)
	}
	wrapped, err := base64.StdEncoding.DecodeString(p.WrappedData)
	if err != nil {
		return nil, fmt.Errorf("key annotation wrapped_data: %w", err)
	}
	if len(kek) != 32 {
		return nil, fmt.Errorf("the key %s is %d bytes; A256GCM needs 32", p.Kid, len(kek))
	}
	aead, err := gcm(kek)
	if err != nil {
		return nil, err
	}
	if len(iv) != aead.NonceSize() || len(wrapped) > MaxOptsBytes+aead.Overhead() {
		return nil, fmt.Errorf("key annotation: iv of %d bytes or wrapped data of %d bytes out of bounds", len(iv), len(wrapped))
	}
	opts, err := aead.Open(nil, iv, wrapped, nil)
	if err != nil {
		return nil, fmt.Errorf("the key %s does not open this layer's key (wrong key, or the annotation was altered)", p.Kid)
	}
	return opts, nil
}

// WrapPacket wraps a layer's private options under kek for the key id kid
// (a kbs:/// resource) and returns the annotation value.
func WrapPacket(kid string, kek, opts []byte) (string, error) {
	aead, err := gcm(kek)
	if err != nil {
		return "", err
	}
	iv := make([]byte, aead.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return "", err
	}
	b, err := json.Marshal(Packet{
		Version: "0.1.0", Kid: kid, Provider: "kbs", WrapType: "A256GCM",
		IV: base64.StdEncoding.EncodeToString(iv), WrappedData: base64.StdEncoding.EncodeToString(aead.Seal(nil, iv, opts, nil)),
	})
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	return cipher.NewGCM(blk)
}

// UnwrapJWE opens a layer's JWE annotation with a private key (PEM or
// JWK, as skopeo's --decryption-key takes it).
func UnwrapJWE(annotation string, privateKey []byte) ([]byte, error) {
	if len(annotation) > MaxAnnotationBytes {
		return nil, fmt.Errorf("JWE annotation is %d bytes, more than %d", len(annotation), MaxAnnotationBytes)
	}
	parts := strings.Split(annotation, ",")
	if len(parts) > MaxWrappedKeys {
		return nil, fmt.Errorf("JWE annotation holds %d wrapped keys, more than %d", len(parts), MaxWrappedKeys)
	}
	dc := &config.DecryptConfig{Parameters: map[string][][]byte{"privkeys": {privateKey}, "privkeys-passwords": {nil}}}
	kw := jwe.NewKeyWrapper()
	for _, part := range parts {
		raw, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			return nil, fmt.Errorf("JWE annotation is not base64: %w", err)
		}
		if opts, err := kw.UnwrapKey(dc, raw); err == nil {
			if len(opts) > MaxOptsBytes {
				return nil, fmt.Errorf("JWE annotation: unwrapped options of %d bytes", len(opts))
			}
			return opts, nil
		}
	}
	return nil, fmt.Errorf("%w: the private key opens none of the layer's %d JWE recipients", ErrNoKey, len(parts))
}

// WrapJWE wraps a layer's private options for JWE recipients (public keys,
// PEM or JWK) and returns the annotation value.
func WrapJWE(opts []byte, recipients [][]byte) (string, error) {
	ec := &config.EncryptConfig{Parameters: map[string][][]byte{"pubkeys": recipients}}
	b, err := jwe.NewKeyWrapper().WrapKeys(ec, opts)
	if err != nil {
		return "", fmt.Errorf("JWE: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Decrypt returns the plaintext (still compressed) stream of an encrypted
// layer: opts are its unwrapped private options, d its descriptor (the
// public options annotation). The stream fails at its end if the HMAC does
// not match; read it to EOF before trusting anything.
func Decrypt(ciphertext io.Reader, opts []byte, d v1.Descriptor) (io.Reader, error) {
	var priv blockcipher.PrivateLayerBlockCipherOptions
	if len(opts) > MaxOptsBytes {
		return nil, fmt.Errorf("layer key options of %d bytes", len(opts))
	}
	if err := json.Unmarshal(opts, &priv); err != nil {
		return nil, fmt.Errorf("layer key options: %w", err)
	}
	pubB64 := d.Annotations[AnnotationPubOpts]
	if len(pubB64) > MaxAnnotationBytes {
		return nil, fmt.Errorf("public options annotation of %d bytes", len(pubB64))
	}
	pubRaw, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil {
		return nil, fmt.Errorf("public options annotation is not base64: %w", err)
	}
	var pub blockcipher.PublicLayerBlockCipherOptions
	if err := json.Unmarshal(pubRaw, &pub); err != nil {
		return nil, fmt.Errorf("public options annotation: %w", err)
	}
	if pub.CipherType != blockcipher.AES256CTR {
		return nil, fmt.Errorf("layer cipher %q: only %s is supported", pub.CipherType, blockcipher.AES256CTR)
	}
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, err
	}
	r, _, err := h.Decrypt(ciphertext, blockcipher.LayerBlockCipherOptions{Public: pub, Private: priv})
	if err != nil {
		return nil, fmt.Errorf("decrypt layer: %w", err)
	}
	return r, nil
}
