package policygen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/internal/testsigstore"
)

func writeKey(t *testing.T, dir, name string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// TestContainersPolicy: the most specific docker scope of
// containers-policy.json decides, as containers-policy.json(5) says.
func TestContainersPolicy(t *testing.T) {
	dir := t.TempDir()
	team := writeKey(t, dir, "team.pub")
	app := writeKey(t, dir, "app.pub")
	host := writeKey(t, dir, "host.pub")
	policyJSON := `{
  "default": [{"type": "reject"}],
  "transports": {
    "docker": {
      "registry.example.com/team/app:1": [{"type": "sigstoreSigned", "keyPath": "app.pub"}],
      "registry.example.com/team": [{"type": "sigstoreSigned", "keyPaths": ["team.pub", "app.pub"]}],
      "*.example.com": [{"type": "sigstoreSigned", "keyPath": "` + filepath.Join(dir, "host.pub") + `"}],
      "docker.io/library": [{"type": "insecureAcceptAnything"}],
      "quay.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "x.gpg"}],
      "ghcr.io": [{"type": "insecureAcceptAnything"}, {"type": "sigstoreSigned", "keyPath": "app.pub"}]
    }
  }
}`
	path := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(path, []byte(policyJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, err := LoadContainersPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	trust := &ImageTrust{Containers: cp}
	for _, tc := range []struct {
		ref  string
		keys []string // nil: by digest
		err  string
	}{
		{"registry.example.com/team/app:1", []string{app}, ""},
		{"registry.example.com/team/app:2", []string{team, app}, ""},
		{"registry.example.com/team/db/primary:1", []string{team, app}, ""},
		{"mirror.example.com/other:1", []string{host}, ""},
		{"busybox:latest", nil, ""},
		{"quay.io/x/y:1", nil, "GPG signature"},
		{"ghcr.io/x/y:1", nil, "2 requirements"},
		{"elsewhere.io/x:1", nil, "default rejects elsewhere.io/x:1"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			ss, err := trust.Signers(tc.ref)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Signers = %v, %v; want an error saying %q", ss, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, s := range ss {
				keys = append(keys, s.Key)
			}
			if strings.Join(keys, "|") != strings.Join(tc.keys, "|") {
				t.Fatalf("keys = %d, want %d (wrong scope)", len(keys), len(tc.keys))
			}
		})
	}
	// Without a matching scope the --signed-by signers apply.
	if _, err := LoadContainersPolicy(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("a missing image policy loads")
	}
}

// TestContainersPolicyFulcio: a sigstoreSigned requirement with a fulcio
// CA and a Rekor key becomes a keyless signer whose trusted root is those
// two, and it verifies a keyless signature timed by the log.
func TestContainersPolicyFulcio(t *testing.T) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fca := vs.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	var caPEM []byte
	for _, c := range append(fca.Intermediates, fca.Root) {
		caPEM = append(caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	var rekor []byte
	for _, l := range vs.RekorLogs() {
		der, err := x509.MarshalPKIXPublicKey(l.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		rekor = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	os.WriteFile(filepath.Join(dir, "fulcio.pem"), caPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "rekor.pub"), rekor, 0o644)
	policyJSON := `{"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "fulcio.pem", "oidcIssuer": "` + testsigstore.Issuer +
		`", "subjectEmail": "` + testsigstore.Identity + `"}, "rekorPublicKeyPath": "rekor.pub"}]}`
	os.WriteFile(filepath.Join(dir, "policy.json"), []byte(policyJSON), 0o644)
	cp, err := LoadContainersPolicy(filepath.Join(dir, "policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := (&ImageTrust{Containers: cp}).Signers("registry.example.com/app:1")
	if err != nil || len(ss) != 1 || !ss[0].TransparencyLog {
		t.Fatalf("Signers = %+v, %v", ss, err)
	}
	v, err := imagesig.New(ss[0])
	if err != nil {
		t.Fatal(err)
	}
	digest := "sha256:" + strings.Repeat("0", 64)
	b := testsigstore.KeylessBundle(t, vs, testsigstore.Identity, digest, imagesig.SignPredicateType, false)
	if who, err := imagesig.Verify([]imagesig.Candidate{{Where: "test", Bundle: b}}, digest, []*imagesig.Verifier{v}); err != nil {
		t.Fatalf("Verify = %q, %v", who, err)
	}
	// Signed by another Sigstore: refused.
	other, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	b = testsigstore.KeylessBundle(t, other, testsigstore.Identity, digest, imagesig.SignPredicateType, false)
	if _, err := imagesig.Verify([]imagesig.Candidate{{Where: "test", Bundle: b}}, digest, []*imagesig.Verifier{v}); err == nil {
		t.Fatal("a signature under another Fulcio CA verifies")
	}
}
