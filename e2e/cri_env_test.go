package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testcri"
	"cocoon.dev/cocoon/internal/testimage"
)

// cri is the shared containerd of the CRI tests.
type cri struct{ *testcri.Containerd }

var criOnce struct {
	sync.Once
	c   *cri
	err error
}

// needCRI returns the shared containerd, starting it on first use. Without
// the tools it skips (fails under CI, where .ci/run builds them).
func needCRI(t *testing.T) *cri {
	t.Helper()
	if env.skipWhy != "" {
		t.Skip(env.skipWhy)
	}
	tools := testcri.Tools()
	if m := testcri.Missing(tools); m != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CRI tests need %s", m)
		}
		t.Skipf("CRI tests need %s", m)
	}
	criOnce.Do(func() { criOnce.c, criOnce.err = startCRI(tools) })
	if criOnce.err != nil {
		t.Fatal(criOnce.err)
	}
	return criOnce.c
}

// stopCRI stops the shared containerd, if one was started.
func stopCRI() {
	if criOnce.c != nil {
		criOnce.c.Stop()
	}
}

func startCRI(tools string) (*cri, error) {
	o, err := criOptions(tools)
	if err != nil {
		return nil, err
	}
	c, err := testcri.Start(o)
	if err != nil {
		return nil, err
	}
	return &cri{c}, nil
}

// criOptions are the test containerd's: this run's binaries and loopback
// registry, with the images critest needs.
func criOptions(tools string) (testcri.Options, error) {
	// The pause image: the runc handler runs it; cocoon never does (the
	// sandbox is the cocoon sandbox itself).
	pause, err := testimage.Image(v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}, Labels: map[string]string{"cocoon.dev/test": "pause"}}, env.bbLayer)
	if err != nil {
		return testcri.Options{}, err
	}
	ref, _, err := env.reg.Push("pause:test", pause)
	if err != nil {
		return testcri.Options{}, err
	}
	if err := pushCritestImages(); err != nil {
		return testcri.Options{}, err
	}
	return testcri.Options{Tools: tools, Bin: env.bin, Registry: env.reg.Host(), Mirrored: critestRegistries, Pause: ref}, nil
}

func tail(s string, n int) string { return testcri.Tail(s, n) }

// crictl runs crictl against this containerd.
func (c *cri) crictl(args ...string) (string, string, int) { return c.Crictl(args...) }

// must runs crictl and fails the test unless it succeeds.
func (c *cri) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := c.crictl(args...)
	if code != 0 {
		t.Fatalf("crictl %v: exit %d\nstdout: %s\nstderr: %s\ncontainerd log:\n%s", args, code, out, errs, c.LogTail(40))
	}
	return strings.TrimSpace(out)
}

// writeJSON writes v as a JSON file in t's temporary directory.
func writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// policyAnnotation generates the policy of a pod spec with the CLI, as a
// user does before deploying it, and returns the annotation's value.
func policyAnnotation(t *testing.T, podYAML string, flags ...string) string {
	t.Helper()
	x := newH(t)
	args := append(append([]string{"policy", "generate", "--print"}, flags...), x.pod(podYAML))
	out, errs := x.mustRun(0, args...)
	if !strings.Contains(out, "package cocoon.policy") {
		t.Fatalf("no policy printed: %s %s", out, errs)
	}
	return base64.StdEncoding.EncodeToString([]byte(out))
}

// podIP is a pod's address on the test network.
func (c *cri) podIP(t *testing.T, pod string) string {
	t.Helper()
	out := c.must(t, "inspectp", "-o", "json", pod)
	var v struct {
		Status struct {
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if net.ParseIP(v.Status.Network.IP) == nil {
		t.Fatalf("pod %s has no IP: %s", pod, out)
	}
	return v.Status.Network.IP
}
