// Package imagesig verifies who signed an OCI image, inside the TEE: the
// signatures `cosign sign` pushes to a registry (Sigstore bundles as OCI
// referrers, cosign v3's default, and the simple-signing payloads under
// the sha256-<hex>.sig tag of cosign v2), checked with sigstore-go against
// the signers a policy trusts — public keys, or keyless certificate
// identities under a pinned Sigstore trusted root.
//
// A signature counts only when it is for the image's digest, is a
// signature (not an attestation by the same key) and verifies under a
// signer of the policy. Everything fetched is bounded in count and size.
package imagesig

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"cocoon.dev/cocoon/policy"
)

// Bounds of what a registry can make the verifier read.
const (
	// MaxCandidates is how many signature manifests are looked at per
	// digest (referrers and the legacy tag's layers together).
	MaxCandidates = 16
	// MaxBundleBytes bounds one Sigstore bundle; MaxPayloadBytes one
	// simple-signing payload; MaxManifestBytes a signature manifest or the
	// referrers index.
	MaxBundleBytes   = 1 << 20
	MaxPayloadBytes  = 64 << 10
	MaxManifestBytes = 1 << 20
	// MaxTrustedRootBytes bounds a policy's trusted_root.json.
	MaxTrustedRootBytes = 1 << 20
)

// ErrNotSigned means no signature of the image verified under any signer:
// none was found, or those found were by others or for other content.
var ErrNotSigned = errors.New("image is not signed by a signer the policy trusts")

// Verifier checks signatures against one policy signer.
type Verifier struct {
	name     string
	verifier *verify.Verifier
	identity verify.PolicyOption
	keyless  bool
}

// Name says who the signer is, for errors and the policy input: "key
// sha256:<fingerprint of the DER public key>" or "identity <san> issuer
// <issuer>".
func (v *Verifier) Name() string { return v.name }

// New compiles a policy signer into a verifier. It fails on a key that
// does not parse, a keyless signer without an issuer, an identity or a
// trusted root, and a signer that is both.
func New(s policy.Signer) (*Verifier, error) {
	keyless := s.Identity != "" || s.IdentityRegexp != "" || s.Issuer != ""
	switch {
	case s.Key != "" && keyless:
		return nil, errors.New("signer: give a key or a certificate identity, not both")
	case s.Key == "" && !keyless:
		return nil, errors.New("signer: give a key or a certificate identity (identity and issuer)")
	case keyless && (s.Issuer == "" || (s.Identity == "" && s.IdentityRegexp == "")):
		return nil, errors.New("signer: a keyless signer needs an issuer and an identity (or identity_regexp)")
	case keyless && s.TrustedRoot == "":
		return nil, errors.New("signer: a keyless signer needs a trusted root (Sigstore's trusted_root.json) to check the certificate against")
	case s.TransparencyLog && s.TrustedRoot == "":
		return nil, errors.New("signer: requiring a transparency log needs a trusted root that holds the log's key")
	case len(s.TrustedRoot) > MaxTrustedRootBytes:
		return nil, fmt.Errorf("signer: trusted root is %d bytes, more than %d", len(s.TrustedRoot), MaxTrustedRootBytes)
	}
	var tr *root.TrustedRoot
	if s.TrustedRoot != "" {
		var err error
		if tr, err = root.NewTrustedRootFromJSON([]byte(s.TrustedRoot)); err != nil {
			return nil, fmt.Errorf("signer: trusted root: %w", err)
		}
	}
	if keyless {
		return newKeyless(s, tr)
	}
	return newKey(s, tr)
}

func newKey(s policy.Signer, tr *root.TrustedRoot) (*Verifier, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey([]byte(s.Key))
	if err != nil {
		return nil, fmt.Errorf("signer: key: %w", err)
	}
	sv, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return nil, fmt.Errorf("signer: key: %w", err)
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	// The bundle's key hint is the signer's to choose: every hint gets
	// the policy's key, which must verify the signature.
	key := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return root.NewExpiringKey(sv, time.Time{}, time.Time{}), nil
	})
	var material root.TrustedMaterial = key
	opts := []verify.VerifierOption{verify.WithNoObserverTimestamps()}
	if s.TransparencyLog {
		material = root.TrustedMaterialCollection{key, tr}
		opts = []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}
	}
	v, err := verify.NewVerifier(material, opts...)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	return &Verifier{name: "key " + fp, verifier: v, identity: verify.WithKey()}, nil
}

func newKeyless(s policy.Signer, tr *root.TrustedRoot) (*Verifier, error) {
	id, err := verify.NewShortCertificateIdentity(s.Issuer, "", s.Identity, s.IdentityRegexp)
	if err != nil {
		return nil, fmt.Errorf("signer: identity: %w", err)
	}
	// Fulcio certificates live minutes: the signature needs a time some
	// log or timestamp authority of the root observed.
	opts := []verify.VerifierOption{verify.WithObserverTimestamps(1)}
	if s.TransparencyLog {
		opts = append(opts, verify.WithTransparencyLog(1))
	}
	if len(tr.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(tr, opts...)
	if err != nil {
		return nil, fmt.Errorf("signer: %w", err)
	}
	who := s.Identity
	if who == "" {
		who = "~" + s.IdentityRegexp
	}
	return &Verifier{name: "identity " + who + " issuer " + s.Issuer, verifier: v, identity: verify.WithCertificateIdentity(id), keyless: true}, nil
}

// Fingerprint names a public key: sha256 of its DER SubjectPublicKeyInfo.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return "", fmt.Errorf("signer: key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// ParseSigner reads a signer as `cocoon policy generate --signed-by` takes
// it: a PEM public key, or "identity=SAN,issuer=URL" (identity-regexp=RE
// instead of identity, transparency-log=true) with the trusted root given
// apart.
func ParseSigner(spec string, key []byte, trustedRoot []byte) (policy.Signer, error) {
	if key != nil {
		s := policy.Signer{Key: string(key)}
		if trustedRoot != nil {
			s.TrustedRoot = string(trustedRoot)
		}
		_, err := New(s)
		return s, err
	}
	var s policy.Signer
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return s, fmt.Errorf("signer %q: %q is not key=value (want identity=SAN,issuer=URL, or a public key file)", spec, kv)
		}
		switch k {
		case "identity":
			s.Identity = v
		case "identity-regexp":
			s.IdentityRegexp = v
		case "issuer":
			s.Issuer = v
		case "transparency-log":
			s.TransparencyLog = v == "true"
		default:
			return s, fmt.Errorf("signer %q: unknown field %q (identity, identity-regexp, issuer, transparency-log)", spec, k)
		}
	}
	if trustedRoot != nil {
		s.TrustedRoot = string(trustedRoot)
	}
	_, err := New(s)
	return s, err
}
