// Package testcosign runs the real cosign CLI (built by
// scripts/image-tools.sh) for tests: key pairs, signatures in both of the
// formats cosign pushes, attestations. Everything stays offline: no
// signing config, no transparency log upload, plain-HTTP loopback
// registries.
package testcosign

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Bin returns the cosign binary. Under CI it must exist; elsewhere a
// missing one skips the test, naming the script that builds it.
func Bin(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("COCOON_TOOLS")
	if dir == "" {
		dir = "/var/tmp/cocoon-tools"
	}
	bin := filepath.Join(dir, "bin", "cosign")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("cosign missing (%v): scripts/image-tools.sh builds it", err)
		}
		t.Skipf("cosign missing (%v): run scripts/image-tools.sh", err)
	}
	return bin
}

// Cosign runs cosign in its own home (nothing read from or written to the
// user's), with an empty key password.
type Cosign struct {
	Bin, Home string
}

// New makes a Cosign with a temporary home.
func New(t testing.TB) *Cosign {
	t.Helper()
	return &Cosign{Bin: Bin(t), Home: t.TempDir()}
}

// Run runs cosign with args and returns its combined output.
func (c *Cosign) Run(args ...string) (string, error) {
	cmd := exec.Command(c.Bin, args...)
	cmd.Dir = c.Home
	cmd.Env = []string{"HOME=" + c.Home, "PATH=" + os.Getenv("PATH"), "COSIGN_PASSWORD=", "TUF_ROOT=" + filepath.Join(c.Home, ".sigstore")}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// KeyPair generates a key pair named prefix (prefix.key, prefix.pub) in the
// home and returns the two paths.
func (c *Cosign) KeyPair(t testing.TB, prefix string) (priv, pub string) {
	t.Helper()
	if out, err := c.Run("generate-key-pair", "--output-key-prefix", prefix); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	return filepath.Join(c.Home, prefix+".key"), filepath.Join(c.Home, prefix+".pub")
}

// offline are the flags that keep cosign off Sigstore's public services.
var offline = []string{"--use-signing-config=false", "--tlog-upload=false", "--allow-http-registry", "--yes"}

// Sign signs image (repo@digest) with the key: a Sigstore bundle (cosign
// v3's default) or, legacy, cosign v2's simple-signing payload under the
// sha256-<hex>.sig tag.
func (c *Cosign) Sign(t testing.TB, key, image string, legacy bool) {
	t.Helper()
	args := append([]string{"sign", "--key", key}, offline...)
	if legacy {
		args = append(args, "--new-bundle-format=false")
	}
	if out, err := c.Run(append(args, image)...); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
}

// Attest attaches an in-toto attestation of predicateType (cosign's short
// names: slsaprovenance, vuln, custom…) with the key.
func (c *Cosign) Attest(t testing.TB, key, image, predicateType, predicate string) {
	t.Helper()
	p := filepath.Join(c.Home, "predicate.json")
	if err := os.WriteFile(p, []byte(predicate), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"attest", "--key", key, "--type", predicateType, "--predicate", p}, offline...)
	if out, err := c.Run(append(args, image)...); err != nil {
		t.Fatalf("cosign attest: %v\n%s", err, out)
	}
}

// Verify runs cosign's own verification of image with the public key (a
// reference point for what cocoon accepts).
func (c *Cosign) Verify(image, pub string, legacy bool) error {
	args := []string{"verify", "--key", pub, "--insecure-ignore-tlog", "--allow-http-registry"}
	if legacy {
		args = append(args, "--new-bundle-format=false")
	}
	out, err := c.Run(append(args, image)...)
	if err != nil {
		return &runError{err: err, out: strings.TrimSpace(out)}
	}
	return nil
}

type runError struct {
	err error
	out string
}

func (e *runError) Error() string { return e.err.Error() + ": " + e.out }
