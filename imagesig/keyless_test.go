package imagesig_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/internal/testsigstore"
	"cocoon.dev/cocoon/policy"
)

// TestKeyless verifies keyless (Fulcio certificate) signatures against the
// identity, the issuer and the trusted root a policy pins.
func TestKeyless(t *testing.T) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	digest := "sha256:" + hex.EncodeToString(make([]byte, 32))
	good := testsigstore.KeylessBundle(t, vs, testsigstore.Identity, digest, imagesig.SignPredicateType, true)
	root, otherRoot := testsigstore.TrustedRoot(t, vs, true), testsigstore.TrustedRoot(t, other, true)
	for _, tc := range []struct {
		name   string
		signer policy.Signer
		bundle []byte
		want   string
	}{
		{"identity and issuer", policy.Signer{Identity: testsigstore.Identity, Issuer: testsigstore.Issuer, TrustedRoot: root}, good, ""},
		{"with the transparency log required", policy.Signer{Identity: testsigstore.Identity, Issuer: testsigstore.Issuer, TrustedRoot: root, TransparencyLog: true}, good, ""},
		{"timed by the log's promise, without a timestamp authority", policy.Signer{Identity: testsigstore.Identity, Issuer: testsigstore.Issuer, TrustedRoot: testsigstore.TrustedRoot(t, vs, false), TransparencyLog: true},
			testsigstore.KeylessBundle(t, vs, testsigstore.Identity, digest, imagesig.SignPredicateType, false), ""},
		{"identity by regexp", policy.Signer{IdentityRegexp: `^ci@example\.com$`, Issuer: testsigstore.Issuer, TrustedRoot: root}, good, ""},
		{"another identity", policy.Signer{Identity: "eve@example.com", Issuer: testsigstore.Issuer, TrustedRoot: root}, good, "eve@example.com"},
		{"another issuer", policy.Signer{Identity: testsigstore.Identity, Issuer: "https://other.example", TrustedRoot: root}, good, "issuer"},
		{"another trusted root", policy.Signer{Identity: testsigstore.Identity, Issuer: testsigstore.Issuer, TrustedRoot: otherRoot}, good, "unable to verify"},
		{"another image", policy.Signer{Identity: testsigstore.Identity, Issuer: testsigstore.Issuer, TrustedRoot: root},
			testsigstore.KeylessBundle(t, vs, testsigstore.Identity, "sha256:"+strings.Repeat("ab", 32), imagesig.SignPredicateType, true), "digest"},
		{"an attestation", policy.Signer{Identity: testsigstore.Identity, Issuer: testsigstore.Issuer, TrustedRoot: root},
			testsigstore.KeylessBundle(t, vs, testsigstore.Identity, digest, "https://slsa.dev/provenance/v1", true), "attestation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := imagesig.New(tc.signer)
			if err != nil {
				t.Fatal(err)
			}
			who, err := imagesig.Verify([]imagesig.Candidate{{Where: "test", Bundle: tc.bundle}}, digest, []*imagesig.Verifier{v})
			if tc.want == "" {
				if err != nil || who != v.Name() {
					t.Fatalf("Verify = %q, %v", who, err)
				}
				return
			}
			if !errors.Is(err, imagesig.ErrNotSigned) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Verify = %q, %v; want a refusal saying %q", who, err, tc.want)
			}
		})
	}
}

// TestNewRefuses: signers that cannot be checked are refused when compiled.
func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    policy.Signer
		want string
	}{
		{"nothing", policy.Signer{}, "give a key or a certificate identity"},
		{"both", policy.Signer{Key: "k", Identity: "a", Issuer: "b", TrustedRoot: "{}"}, "not both"},
		{"no issuer", policy.Signer{Identity: "a", TrustedRoot: "{}"}, "needs an issuer"},
		{"no root", policy.Signer{Identity: "a", Issuer: "b"}, "trusted root"},
		{"bad key", policy.Signer{Key: "not pem"}, "key"},
		{"bad root", policy.Signer{Identity: "a", Issuer: "b", TrustedRoot: "nope"}, "trusted root"},
		{"log without root", policy.Signer{Key: "k", TransparencyLog: true}, "transparency log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := imagesig.New(tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestParseSigner reads --signed-by's keyless form.
func TestParseSigner(t *testing.T) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	tr := []byte(testsigstore.TrustedRoot(t, vs, true))
	s, err := imagesig.ParseSigner("identity=ci@example.com,issuer=https://issuer.example,transparency-log=true", nil, tr)
	if err != nil || s.Identity != "ci@example.com" || s.Issuer != "https://issuer.example" || !s.TransparencyLog || s.TrustedRoot == "" {
		t.Fatalf("ParseSigner = %+v, %v", s, err)
	}
	for spec, want := range map[string]string{
		"identity=a":                       "needs an issuer",
		"issuer=https://x,who=me":          `unknown field "who"`,
		"identity-regexp=^a$;issuer=x":     "needs an issuer",
		"identity=a,issuer=b,stray":        "not key=value",
		"identity=a,issuer=https://i.test": "",
	} {
		_, err := imagesig.ParseSigner(spec, nil, tr)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("ParseSigner(%q) = %v, want %q", spec, err, want)
		}
	}
	if _, err := imagesig.ParseSigner("identity=a,issuer=b", nil, nil); err == nil || !strings.Contains(err.Error(), "trusted root") {
		t.Errorf("keyless without a trusted root: %v", err)
	}
}
