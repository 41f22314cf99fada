package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
)

func testimageBusyboxWithMarker(marker string) (v1.Image, error) {
	l, err := testimage.Layer([]testimage.File{{Path: "/marker", Data: []byte(marker)}})
	if err != nil {
		return nil, err
	}
	return testimage.Busybox(l)
}

// TestPodNetworkAndLoopbackRegistry runs the hello pod shape with its image
// pulled from a registry on the host's loopback, through the sandbox's
// egress channel: the sidecar server and the client talk over the pod's own
// loopback.
func TestPodNetworkAndLoopbackRegistry(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: server
    image: %[1]s
    restartPolicy: Always
    command: ["/echo", "-listen", "127.0.0.1:8080"]
  containers:
  - name: client
    image: %[1]s
    command: ["sh", "-c", "for i in $(seq 100); do wget -qO- http://127.0.0.1:8080/over-loopback && exit 0; sleep 0.1; done; exit 1"]
`, env.echo))
	out, errs := x.mustRun(0, "run", p)
	if !strings.Contains(out, "[client] echo from hello: over-loopback") {
		t.Errorf("stdout %q stderr %q", out, errs)
	}
	// The pod network is the sandbox's own: the server is not on the
	// host's loopback.
	if b, err := exec.Command("sh", "-c", "ss -ltn 2>/dev/null | grep -c 127.0.0.1:8080").Output(); err == nil && strings.TrimSpace(string(b)) != "0" {
		t.Errorf("the pod's port is visible on the host: %s", b)
	}
}

// TestHelloExample runs examples/hello as the README does.
func TestHelloExample(t *testing.T) {
	x := newH(t)
	dir := t.TempDir()
	b, err := os.ReadFile("../examples/hello/pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "pod.yaml"), b, 0o644)
	build := exec.Command("go", "run", "cocoon.dev/cocoon/internal/cmd/mkimage", "-layout", filepath.Join(dir, "image"), "-tag", "hello",
		"-add", "/echo="+buildEcho(t))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v %s", err, out)
	}
	// As the README demo: a generated policy, enforced.
	x.mustRun(0, "policy", "generate", filepath.Join(dir, "pod.yaml"))
	out, errs, code := x.cocoonRaw("run", filepath.Join(dir, "pod.yaml"))
	if code != 0 || !strings.Contains(out, "[client] echo from hello: hello-from-cocoon") {
		t.Errorf("stdout %q stderr %q", out, errs)
	}
}

func buildEcho(t *testing.T) string {
	b, err := testimage.GoBinary("cocoon.dev/cocoon/examples/hello/echo")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "echo")
	os.WriteFile(p, b, 0o755)
	return p
}

func TestOCILayoutImage(t *testing.T) {
	x := newH(t)
	out, _ := x.mustRun(0, "run", x.pod(simplePod("layout", "oci:"+env.layout+":busybox", "Never", "echo from-layout")))
	if !strings.Contains(out, "from-layout") {
		t.Errorf("stdout %q", out)
	}
}
