package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/serving"

	"cocoon.dev/cocoon/sandbox"
)

// startAS runs `cocoon as serve` on a free loopback port and returns its URL.
func (x *h) startAS(args ...string) string {
	x.t.Helper()
	cmd := exec.Command(filepath.Join(env.bin, "cocoon"), append([]string{"--root", x.root, "as", "serve", "--listen", "127.0.0.1:0", "--state", x.t.TempDir()}, args...)...)
	return x.serve(cmd)
}

// serve starts a cocoon service, stops it at the end of the test, and
// returns its URL.
func (x *h) serve(cmd *exec.Cmd) string {
	x.t.Helper()
	u, err := serving.Start(cmd, 20*time.Second)
	if err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { serving.Stop(cmd) })
	return u
}

// TestAttestationServiceEndToEnd: sim evidence from a running sandbox gets a
// token from `cocoon as serve` only when it trusts the sim root; the token
// verifies with the service's JWKS and says sim.
func TestAttestationServiceEndToEnd(t *testing.T) {
	x := newH(t)
	x.mustRun(0, "run", "-d", x.pod(simplePod("astest", env.busybox, "Never", "exec sleep 1000")))
	x.waitPhase("astest", sandbox.PhaseRunning)
	strict := x.startAS()
	_, errs := x.mustRun(1, "attest", "astest", "--as", strict)
	if !strings.Contains(errs, "simulated TEE") {
		t.Errorf("untrusting service: %s", errs)
	}
	url := x.startAS("--trust-sim")
	tok, _ := x.mustRun(0, "attest", "astest", "--as", url)
	tok = strings.TrimSpace(tok)
	out, errs := x.mustRun(0, "token", "verify", tok, "--jwks", url+"/.well-known/jwks.json")
	var ear struct {
		Submods map[string]struct {
			Status   string `json:"ear.status"`
			Evidence struct {
				TEE      string `json:"tee"`
				HostData string `json:"host_data"`
			} `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	if err := json.Unmarshal([]byte(out), &ear); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cpu := ear.Submods["cpu0"]
	if cpu.Evidence.TEE != "sim" || cpu.Evidence.HostData != x.status("astest").HostData || cpu.Status != "warning" {
		t.Errorf("token claims %+v (stderr %s)", cpu, errs)
	}
	// A token from another service's keys does not verify.
	x.mustRun(1, "token", "verify", tok, "--jwks", x.startAS("--trust-sim")+"/.well-known/jwks.json")
}
