package imagesig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// SignPredicateType is the in-toto predicate of cosign's image signature
// (cosign v3's bundles). Attestations (`cosign attest`: provenance, SBOMs,
// scan results) name other predicates and are not signatures of the image.
const SignPredicateType = "https://sigstore.dev/cosign/sign/v1"

// simpleSigningType is the critical.type of cosign's simple-signing
// payload.
const simpleSigningType = "cosign container image signature"

// Check fetches the signatures of each of an image's digests (what its
// reference resolved to, and the platform manifest when that differs:
// `cosign sign --recursive` signs both) from repo and returns the signer
// that verified one.
func Check(ctx context.Context, repo name.Repository, digests []string, signers []*Verifier, tr http.RoundTripper) (string, error) {
	var last error
	for i, d := range digests {
		if i > 0 && d == digests[0] {
			continue
		}
		cands, err := Fetch(ctx, repo, d, tr)
		if err != nil {
			return "", err
		}
		who, err := Verify(cands, d, signers)
		if err == nil {
			return who, nil
		}
		last = err
	}
	return "", last
}

// Verify returns the name of the first signer under which one of the
// candidates is a signature of digest. Otherwise the error, wrapping
// ErrNotSigned, says what was found and why each failed.
func Verify(cands []Candidate, digest string, signers []*Verifier) (string, error) {
	if len(signers) == 0 {
		return "", fmt.Errorf("%w: the policy names no signer", ErrNotSigned)
	}
	raw, err := digestBytes(digest)
	if err != nil {
		return "", err
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("%w: no signature of %s was found (looked for Sigstore bundles among its OCI referrers and for cosign's sha256-<hex>.sig tag); sign it with `cosign sign --key cosign.key IMAGE@%s`", ErrNotSigned, digest, digest)
	}
	var reasons []string
	for _, c := range cands {
		for _, s := range signers {
			err := verifyOne(c, digest, raw, s)
			if err == nil {
				return s.Name(), nil
			}
			reasons = append(reasons, fmt.Sprintf("%s under %s: %v", c.Where, s.Name(), err))
		}
	}
	return "", fmt.Errorf("%w: %d signature(s) of %s found, none verifies: %s (sign this digest with a key or identity the policy names, or generate the policy again for this signer)", ErrNotSigned, len(cands), digest, strings.Join(reasons, "; "))
}

func digestBytes(digest string) ([]byte, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	raw, err := hex.DecodeString(h)
	if !ok || err != nil || len(raw) != sha256.Size {
		return nil, fmt.Errorf("image digest %q is not sha256:<64 hex>", digest)
	}
	return raw, nil
}

func verifyOne(c Candidate, digest string, raw []byte, s *Verifier) error {
	if c.Bundle != nil {
		return verifyBundle(c.Bundle, raw, s)
	}
	return verifyLegacy(c, digest, s)
}

func verifyBundle(b []byte, digest []byte, s *Verifier) error {
	var bun bundle.Bundle
	if err := bun.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("not a Sigstore bundle: %w", err)
	}
	if bun.GetDsseEnvelope() == nil {
		return errors.New("the bundle signs a message, not an in-toto statement about the image")
	}
	res, err := s.verifier.Verify(&bun, verify.NewPolicy(verify.WithArtifactDigest("sha256", digest), s.identity))
	if err != nil {
		return err
	}
	if res.Statement == nil || res.Statement.GetPredicateType() != SignPredicateType {
		pt := ""
		if res.Statement != nil {
			pt = res.Statement.GetPredicateType()
		}
		return fmt.Errorf("the bundle is an attestation (predicate %q), not a signature (%q)", pt, SignPredicateType)
	}
	return nil
}

// Payload is cosign's simple-signing payload (the "critical" part that
// matters; "optional" is the signer's free-form annotations).
type Payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// ParsePayload parses a simple-signing payload and checks it names an
// image digest and is cosign's kind of signature.
func ParsePayload(b []byte) (*Payload, error) {
	if len(b) > MaxPayloadBytes {
		return nil, fmt.Errorf("payload is %d bytes, more than %d", len(b), MaxPayloadBytes)
	}
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if p.Critical.Type != simpleSigningType {
		return nil, fmt.Errorf("payload type is %q, want %q", p.Critical.Type, simpleSigningType)
	}
	if _, err := digestBytes(p.Critical.Image.DockerManifestDigest); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return &p, nil
}

func verifyLegacy(c Candidate, digest string, s *Verifier) error {
	if c.Certificate != "" || s.keyless {
		return errors.New("cosign v2's keyless signatures are not verified here: sign with cosign v3 (its Sigstore bundle carries the log entry this needs)")
	}
	sig, err := base64.StdEncoding.DecodeString(c.Signature)
	if err != nil || len(sig) == 0 {
		return fmt.Errorf("the %s annotation is not a base64 signature", SignatureAnnotation)
	}
	p, err := ParsePayload(c.Payload)
	if err != nil {
		return err
	}
	if got := p.Critical.Image.DockerManifestDigest; got != digest {
		return fmt.Errorf("the signature is for %s, not this image", got)
	}
	sum := sha256.Sum256(c.Payload)
	pb := &protobundle.Bundle{
		MediaType: BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     sig,
		}},
	}
	bun, err := bundle.NewBundle(pb)
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	_, err = s.verifier.Verify(bun, verify.NewPolicy(verify.WithArtifact(bytes.NewReader(c.Payload)), s.identity))
	return err
}
