package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cocoon.dev/cocoon/sandbox"
	"cocoon.dev/cocoon/tee"
)

// TestAttestAndVerifySim: evidence from a running sandbox verifies end to
// end with cocoon attest + cocoon verify, only when the sim root is trusted,
// and carries the measurement cocoon measure computes.
func TestAttestAndVerifySim(t *testing.T) {
	x := newH(t)
	x.mustRun(0, "run", "-d", x.pod(simplePod("att", env.busybox, "Never", "exec sleep 1000")))
	x.waitPhase("att", sandbox.PhaseRunning)
	out, _ := x.mustRun(0, "attest", "att", "--nonce", "c0ffee")
	ev, err := tee.ParseEvidence([]byte(out))
	if err != nil {
		t.Fatalf("attest printed %q: %v", out, err)
	}
	if ev.TEE != tee.Sim || string(ev.RuntimeData) != "\xc0\xff\xee" {
		t.Errorf("evidence %+v", ev)
	}
	f := filepath.Join(t.TempDir(), "ev.json")
	os.WriteFile(f, []byte(out), 0o644)
	_, errs := x.mustRun(1, "verify", f)
	if !strings.Contains(errs, "simulated TEE") {
		t.Errorf("untrusted sim: %s", errs)
	}
	js, _ := x.mustRun(0, "verify", "--trust-sim", "--nonce", "c0ffee", "-o", "json", f)
	var res struct {
		Verified bool
		Claims   struct {
			TEE         string
			Measurement string
			HostData    string `json:"host_data"`
		}
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil || !res.Verified || res.Claims.TEE != "sim" {
		t.Fatalf("verify: %v %s", err, js)
	}
	m, _ := x.mustRun(0, "measure", "--tee", "sim", "--agent", filepath.Join(env.bin, "cocoon-agent"))
	if strings.TrimSpace(m) != res.Claims.Measurement || x.status("att").Measurement != res.Claims.Measurement {
		t.Errorf("measurement: cocoon measure %s, evidence %s, status %s", m, res.Claims.Measurement, x.status("att").Measurement)
	}
	// A replayed evidence for another nonce is refused.
	_, errs = x.mustRun(1, "verify", "--trust-sim", "--nonce", "beef", f)
	if !strings.Contains(errs, "runtime_data") {
		t.Errorf("replay: %s", errs)
	}
}

// TestInPodEvidence: a container gets its sandbox's evidence from the in-pod
// API, over the pod network and over the mounted socket.
func TestInPodEvidence(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: inpod}
spec:
  restartPolicy: Never
  containers:
  - name: tcp
    image: %[1]s
    command: ["/echo", "-get", "http://127.0.0.1:8006/cocoon/v1/evidence?runtime_data=aGVsbG8"]
  - name: sock
    image: %[1]s
    command: ["/echo", "-unix", "/run/cocoon/api.sock", "-get", "http://pod/cocoon/v1/evidence?runtime_data=aGVsbG8"]
  - name: skr
    image: %[1]s
    command: ["sh", "-c", "wget -qO- --post-data '{\"runtime_data\":\"aGVsbG8=\"}' http://127.0.0.1:8006/attest/raw"]
`, env.echo))
	out, errs := x.mustRun(0, "run", p)
	for _, c := range []string{"tcp", "sock"} {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "["+c+"] ") {
				line = strings.TrimPrefix(l, "["+c+"] ")
			}
		}
		ev, err := tee.ParseEvidence([]byte(line))
		if err != nil || string(ev.RuntimeData) != "hello" || ev.TEE != tee.Sim || ev.Binding != tee.BindWorkload {
			t.Errorf("%s: %v %q (stderr %s)", c, err, line, errs)
		}
	}
	if !strings.Contains(out, `[skr] {"report":"`) {
		t.Errorf("attest/raw: %s", out)
	}
	// Verify one of them with the sim root.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "[tcp] ") {
			f := filepath.Join(t.TempDir(), "ev.json")
			os.WriteFile(f, []byte(strings.TrimPrefix(l, "[tcp] ")), 0o644)
			x.mustRun(0, "verify", "--trust-sim", "--binding", "workload", f)
			// Workload evidence is not a host challenge's answer.
			_, errs := x.mustRun(1, "verify", "--trust-sim", f)
			if !strings.Contains(errs, "made for cocoon/v1/workload") {
				t.Errorf("workload evidence as a host challenge: %s", errs)
			}
		}
	}
}
