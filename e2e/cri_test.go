package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// criPod is a pod spec, the crictl configurations of the same pod, and its
// policy annotation.
type criPod struct {
	name       string
	podConfig  string // crictl pod config file
	containers map[string]string
}

// newCRIPod generates the policy for podYAML (a Pod whose containers are
// given as crictl container configs too) and writes crictl's files.
func newCRIPod(t *testing.T, name, podYAML string, containers map[string]map[string]any, genFlags ...string) *criPod {
	t.Helper()
	ann := policyAnnotation(t, podYAML, genFlags...)
	logDir := t.TempDir()
	p := &criPod{name: name, containers: map[string]string{}}
	p.podConfig = writeJSON(t, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid", "attempt": 0},
		"hostname":      name,
		"log_directory": logDir,
		"annotations":   map[string]string{"cocoon.dev/policy": ann},
		"linux":         map[string]any{},
	})
	for cname, cfg := range containers {
		cfg["metadata"] = map[string]any{"name": cname}
		cfg["log_path"] = cname + ".log"
		if _, ok := cfg["linux"]; !ok {
			// As kubelet does unless shareProcessNamespace: the
			// container's own PID namespace (crictl's default is the
			// pod's).
			cfg["linux"] = map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}}
		}
		p.containers[cname] = writeJSON(t, cname+".json", cfg)
	}
	return p
}

// run starts the pod with the cocoon handler and returns its ID; the pod is
// removed at the end of the test.
func (c *cri) runPod(t *testing.T, p *criPod) string {
	t.Helper()
	id := c.must(t, "runp", "--runtime", "cocoon", p.podConfig)
	t.Cleanup(func() { c.crictl("rmp", "-f", id) })
	return id
}

func (c *cri) createStart(t *testing.T, podID string, p *criPod, name string) string {
	t.Helper()
	// The host's pull is bookkeeping for the CRI (image status, garbage
	// collection): the agent pulls and verifies the image itself.
	id := c.must(t, "create", "--with-pull", podID, p.containers[name], p.podConfig)
	c.must(t, "start", id)
	return id
}

// waitState waits until crictl reports a container in state (e.g.
// CONTAINER_EXITED).
func (c *cri) waitState(t *testing.T, id, state string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, _, _ := c.crictl("inspect", "-o", "go-template", "--template", "{{.status.state}}", id)
		if strings.TrimSpace(out) == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: state %q, want %s after %s", id, strings.TrimSpace(out), state, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hostPodYAML(name, image, command string) string {
	return criPodYAML(name, fmt.Sprintf(`  containers:
  - name: main
    image: %s
    command: ["/bin/sh", "-c", %q]
`, image, command))
}

// criPodYAML is a pod for the cocoon RuntimeClass, as the generator wants
// one (no service links, no service account token): spec is the rest of
// its spec, indented two spaces.
func criPodYAML(name, spec string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name +
		"\nspec:\n  runtimeClassName: cocoon\n  enableServiceLinks: false\n  automountServiceAccountToken: false\n" + spec
}

// TestCRILifecycle drives a cocoon pod through containerd's CRI with
// crictl: runp, create, start, logs, exec, stop, rm, stopp, rmp.
func TestCRILifecycle(t *testing.T) {
	c := needCRI(t)
	cmd := "echo hello from the sandbox; echo to stderr >&2; cat /etc/resolv.conf; exec sleep 1000"
	p := newCRIPod(t, "cri-life", hostPodYAML("cri-life", env.pinned, cmd), map[string]map[string]any{
		"main": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd}},
	})
	// The pod's DNS (kubelet's dnsConfig) reaches the container's
	// resolv.conf, written by the agent.
	p.setPodConfig(t, "dns_config", map[string]any{"servers": []string{"10.10.10.10"}, "searches": []string{"svc.example"}, "options": []string{"ndots:3"}})
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "main")
	c.waitState(t, ctr, "CONTAINER_RUNNING", 30*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, errs, _ := c.crictl("logs", ctr)
		if strings.Contains(out+errs, "hello from the sandbox") && strings.Contains(out+errs, "to stderr") &&
			strings.Contains(out, "nameserver 10.10.10.10") && strings.Contains(out, "search svc.example") && strings.Contains(out, "options ndots:3") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("crictl logs: %q %q", out, errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The container runs in the cocoon sandbox: its process tree is the
	// agent's, in a PID namespace of its own, not a child of runc's shim.
	shims, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	found := false
	for _, f := range shims {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "cocoon-agent") && strings.Contains(string(b), c.Dir) {
			found = true
		}
	}
	if !found {
		t.Fatal("no cocoon-agent runs for this containerd's pods")
	}
	c.must(t, "stop", "--timeout", "5", ctr)
	c.waitState(t, ctr, "CONTAINER_EXITED", 10*time.Second)
	c.must(t, "rm", ctr)
	c.must(t, "stopp", podID)
	c.must(t, "rmp", podID)
	if out, _, _ := c.crictl("pods", "-q", "--id", podID); strings.TrimSpace(out) != "" {
		t.Fatalf("pod still listed after rmp: %s", out)
	}
}

// setPodConfig sets a field of the pod's crictl configuration.
func (p *criPod) setPodConfig(t *testing.T, key string, v any) {
	t.Helper()
	b, err := os.ReadFile(p.podConfig)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = v
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.podConfig, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitLogs waits until the container's logs (crictl logs: its stdout and,
// after them, its stderr) satisfy ok, or fails the test with them.
func (c *cri) waitLogs(t *testing.T, ctr string, within time.Duration, ok func(out string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		stdout, stderr, _ := c.crictl("logs", ctr)
		out := stdout + stderr
		if ok(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: logs after %s:\n%s", ctr, within, tail(out, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
