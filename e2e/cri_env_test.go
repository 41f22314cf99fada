package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
)

// cri is a real containerd (with its CRI plugin) that this test run starts
// with its own root, state, socket, registry configuration and CNI
// network, with the cocoon runtime handler beside runc, driven by crictl.
type cri struct {
	dir     string // everything of this containerd
	sock    string
	tools   string // containerd, containerd-shim-runc-v2, crictl
	cmd     *exec.Cmd
	logPath string
	bridge  string
	subnet  string // 10.213.N
	pause   string // the sandbox image, by tag
}

var criOnce struct {
	sync.Once
	c   *cri
	err error
}

// criTools is where scripts/cri-tools.sh puts containerd and crictl.
func criTools() string {
	if d := os.Getenv("COCOON_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	return "/var/tmp/cocoon-tools/bin"
}

// needCRI returns the shared containerd, starting it on first use. Without
// the tools it skips (fails under CI, where .ci/run builds them).
func needCRI(t *testing.T) *cri {
	t.Helper()
	if env.skipWhy != "" {
		t.Skip(env.skipWhy)
	}
	tools := criTools()
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "crictl"} {
		if _, err := os.Stat(filepath.Join(tools, b)); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing in %s: scripts/cri-tools.sh builds it", b, tools)
			}
			t.Skipf("CRI tests need %s in %s: run scripts/cri-tools.sh", b, tools)
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing: apt-get install containernetworking-plugins", p)
			}
			t.Skipf("CRI tests need CNI plugins (%s): apt-get install containernetworking-plugins", p)
		}
	}
	criOnce.Do(func() { criOnce.c, criOnce.err = startCRI(tools) })
	if criOnce.err != nil {
		t.Fatal(criOnce.err)
	}
	return criOnce.c
}

// stopCRI stops the shared containerd, if one was started, and removes
// every trace of it (pods, the bridge, its files).
func stopCRI() {
	if criOnce.c != nil {
		criOnce.c.stop()
	}
}

func startCRI(tools string) (*cri, error) {
	dir, err := os.MkdirTemp("", "cocoon-cri")
	if err != nil {
		return nil, err
	}
	var id [2]byte
	_, _ = rand.Read(id[:])
	c := &cri{dir: dir, sock: filepath.Join(dir, "containerd.sock"), tools: tools,
		logPath: filepath.Join(dir, "containerd.log"),
		bridge:  "cct" + hex.EncodeToString(id[:]),
		subnet:  fmt.Sprintf("10.213.%d", id[0])}
	// The pause image: the runc handler runs it; cocoon never does (the
	// sandbox is the cocoon sandbox itself).
	pause, err := testimage.Image(v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}, Labels: map[string]string{"cocoon.dev/test": "pause"}}, env.bbLayer)
	if err != nil {
		return nil, err
	}
	if c.pause, _, err = env.reg.Push("pause:test", pause); err != nil {
		return nil, err
	}
	if err := pushCritestImages(); err != nil {
		return nil, err
	}
	if err := c.writeConfig(); err != nil {
		return nil, err
	}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c.cmd = exec.Command(filepath.Join(tools, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.Env = append(os.Environ(), "PATH="+tools+":"+os.Getenv("PATH"))
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, _, code := c.crictl("info"); code == 0 && strings.Contains(out, `"NetworkReady"`) {
			break
		}
		if time.Now().After(deadline) {
			c.stop()
			b, _ := os.ReadFile(c.logPath)
			return nil, fmt.Errorf("containerd did not become ready in 30s:\n%s", tail(string(b), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c, nil
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// writeConfig writes containerd's configuration: its own directories, the
// cocoon handler (with runc's beside it), the registry on loopback over
// plain HTTP, and a bridge network that no pod packet can leave: the
// bridge is the pods' only gateway, nothing is masqueraded and the pods get
// no default route.
func (c *cri) writeConfig() error {
	host := env.reg.Host()
	// The loopback registry over plain HTTP, and as the only source of
	// the registries critest pulls from (no fallback upstream: these
	// machines have no internet, and tests must not reach it).
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", host, host)
	for _, r := range append([]string{host}, critestRegistries...) {
		certs := filepath.Join(c.dir, "certs.d", r)
		if err := os.MkdirAll(certs, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(certs, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return err
		}
	}
	allowAll := filepath.Join(c.dir, "allow-all.rego")
	if out, err := exec.Command(filepath.Join(env.bin, "cocoon"), "policy", "allow-all", "--to", allowAll).CombinedOutput(); err != nil {
		return fmt.Errorf("cocoon policy allow-all: %v: %s", err, out)
	}
	netd := filepath.Join(c.dir, "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		return err
	}
	conflist := map[string]any{
		"cniVersion": "1.0.0", "name": "cocoon-test-" + c.bridge,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": c.bridge, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(c.dir, "ipam"),
				"ranges": []any{[]any{map[string]any{"subnet": c.subnet + ".0/24"}}}, "routes": []any{}},
		}},
	}
	b, _ := json.MarshalIndent(conflist, "", "  ")
	if err := os.WriteFile(filepath.Join(netd, "10-cocoon-test.conflist"), b, 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
imports = []

[grpc]
  address = %[3]q

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[4]q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %[5]q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cocoon]
      runtime_type = 'io.containerd.cocoon.v2'
      runtime_path = %[6]q
      pod_annotations = ['cocoon.dev/*']
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cocoon.options]
        root = %[7]q
        agent = %[8]q
        registry_config_path = %[5]q
    # The same runtime with an allow-all default policy, for the CRI
    # validation suite, whose pods carry no policy.
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cocoon-allow-all]
      runtime_type = 'io.containerd.cocoon.v2'
      runtime_path = %[6]q
      pod_annotations = ['cocoon.dev/*']
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cocoon-allow-all.options]
        root = %[7]q
        agent = %[8]q
        registry_config_path = %[5]q
        default_policy = %[10]q
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = %[9]q

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.sock, c.pause,
		filepath.Join(c.dir, "certs.d"), filepath.Join(env.bin, "containerd-shim-cocoon-v2"),
		filepath.Join(c.dir, "cocoon"), filepath.Join(env.bin, "cocoon-agent"), netd, allowAll)
	return os.WriteFile(filepath.Join(c.dir, "config.toml"), []byte(cfg), 0o600)
}

// crictl runs crictl against this containerd.
func (c *cri) crictl(args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ep := "unix://" + c.sock
	cmd := exec.CommandContext(ctx, filepath.Join(c.tools, "crictl"),
		append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "150s"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return "", err.Error(), -1
	}
	return out.String(), errb.String(), code
}

// must runs crictl and fails the test unless it succeeds.
func (c *cri) must(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := c.crictl(args...)
	if code != 0 {
		b, _ := os.ReadFile(c.logPath)
		t.Fatalf("crictl %v: exit %d\nstdout: %s\nstderr: %s\ncontainerd log:\n%s", args, code, out, errs, tail(string(b), 40))
	}
	return strings.TrimSpace(out)
}

func (c *cri) stop() {
	_, _, _ = c.crictl("rmp", "-fa")
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	_ = exec.Command("ip", "link", "del", c.bridge).Run()
	// Mounts containerd left (snapshots, netns) before the files go.
	_ = exec.Command("sh", "-c", "grep -o ' "+c.dir+"[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l").Run()
	_ = os.RemoveAll(c.dir)
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
