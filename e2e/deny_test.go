package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cocoon.dev/cocoon/sandbox"
)

// nothingStarted checks that no container of the sandbox ever ran.
func (x *h) nothingStarted(name string) {
	x.t.Helper()
	st := x.status(name)
	for _, c := range st.Containers {
		if !c.Started.IsZero() || c.State == "running" {
			x.t.Errorf("container %s was started: %+v", c.Name, c)
		}
	}
}

func TestTamperedLayerRefused(t *testing.T) {
	x := newH(t)
	// A fresh image, so that no cache holds its layers.
	img, err := testimageBusyboxWithMarker("tamper")
	if err != nil {
		t.Fatal(err)
	}
	_, pinned, err := env.reg.Push("evil/image:v1", img)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	bad, _ := layers[1].Digest()
	// The policy is generated while the registry is honest; then the
	// registry (or the network) changes a layer.
	p := x.pod(simplePod("tampered", pinned, "Never", "echo must-not-run"))
	x.mustRun(0, "policy", "generate", p)
	env.reg.Tamper(bad.String())
	out, errs := x.mustRun(125, "run", p)
	if strings.Contains(out, "must-not-run") {
		t.Error("the container ran")
	}
	if !strings.Contains(errs, "layer 2/2") || !strings.Contains(errs, bad.String()) {
		t.Errorf("error does not name the tampered layer: %s", errs)
	}
	x.nothingStarted("tampered")
	if st := x.status("tampered"); st.Phase != sandbox.PhaseFailed {
		t.Errorf("phase %s", st.Phase)
	}
	// Generating a policy from the tampered registry fails too, naming it
	// (without the cache of images verified before).
	os.RemoveAll(filepath.Join(x.root, "cache"))
	p2 := x.pod(simplePod("tampered2", pinned, "Never", "true"))
	_, errs = x.mustRun(1, "policy", "generate", p2)
	if !strings.Contains(errs, bad.String()) {
		t.Errorf("generate from a tampered registry: %s", errs)
	}
}

// noSandbox checks that no sandbox was created.
func (x *h) noSandbox(name string) {
	x.t.Helper()
	if _, err := os.Stat(filepath.Join(x.root, "sandboxes", name)); !os.IsNotExist(err) {
		x.t.Errorf("sandbox %s was created", name)
	}
}

func TestWrongPinnedDigest(t *testing.T) {
	x := newH(t)
	ref := strings.Split(env.pinned, "@")[0] + "@sha256:" + strings.Repeat("ab", 32)
	out, errs := x.mustRun(125, "run", x.pod(simplePod("wrongdigest", ref, "Never", "echo must-not-run")))
	if strings.Contains(out, "must-not-run") || !strings.Contains(errs, "sha256:abab") {
		t.Errorf("stdout %q stderr %q", out, errs)
	}
	x.noSandbox("wrongdigest")
}

func TestMissingImage(t *testing.T) {
	x := newH(t)
	_, errs := x.mustRun(125, "run", x.pod(simplePod("missing", env.reg.Host()+"/no/such:image", "Never", "true")))
	if !strings.Contains(errs, "no/such") {
		t.Errorf("stderr %q", errs)
	}
	x.noSandbox("missing")
}

func TestUnsupportedFieldRefusedBeforeLaunch(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:
  containers:
  - name: a
    image: %s
    ports: [{containerPort: 80}]
    lifecycle: {preStop: {exec: {command: ["true"]}}}
`, env.busybox))
	_, errs := x.mustRun(125, "run", p)
	if !strings.Contains(errs, "spec.containers[0].lifecycle is not supported") {
		t.Errorf("stderr %q", errs)
	}
	if _, err := os.Stat(filepath.Join(x.root, "sandboxes", "hostnet")); !os.IsNotExist(err) {
		t.Errorf("a sandbox was created for an invalid pod")
	}
}

func TestPrivilegedRefused(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: priv}
spec:
  restartPolicy: Never
  containers:
  - name: root
    image: %s
    command: ["sh", "-c", "echo must-not-run"]
    securityContext: {privileged: true}
`, env.busybox))
	out, errs := x.mustRun(125, "run", p)
	if strings.Contains(out, "must-not-run") || !strings.Contains(errs, `container "root" is privileged`) {
		t.Errorf("stdout %q stderr %q", out, errs)
	}
}

func TestBadCommandIsAStartError(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: badcmd}
spec:
  restartPolicy: Never
  containers:
  - {name: a, image: %s, command: ["/no/such/binary"]}
`, env.busybox))
	_, errs := x.mustRun(128, "run", p)
	if !strings.Contains(errs, "StartError") || !strings.Contains(errs, "/no/such/binary") {
		t.Errorf("stderr %q", errs)
	}
}
