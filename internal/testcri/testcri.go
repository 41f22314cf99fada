// Package testcri runs a real containerd (with its CRI plugin) for tests and
// benchmarks: its own root, state, socket, registry configuration and CNI
// network, with the cocoon runtime handlers beside runc, driven by crictl or
// the CRI API. It needs root, the tools scripts/cri-tools.sh builds, and
// Debian's containernetworking-plugins.
package testcri

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Tools is where scripts/cri-tools.sh puts containerd, crictl and critest
// (COCOON_TOOLS/bin, default /var/tmp/cocoon-tools/bin).
func Tools() string {
	if d := os.Getenv("COCOON_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	return "/var/tmp/cocoon-tools/bin"
}

// Missing names what Start needs and this machine lacks ("" if nothing).
func Missing(tools string) string {
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "crictl"} {
		if _, err := os.Stat(filepath.Join(tools, b)); err != nil {
			return filepath.Join(tools, b) + " (scripts/cri-tools.sh builds it)"
		}
	}
	for _, p := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(p); err != nil {
			return p + " (apt-get install containernetworking-plugins)"
		}
	}
	return ""
}

// Options says what containerd serves.
type Options struct {
	// Tools holds containerd, containerd-shim-runc-v2 and crictl.
	Tools string
	// Bin holds cocoon, cocoon-agent and containerd-shim-cocoon-v2.
	Bin string
	// Registry is the loopback registry's host:port (plain HTTP), which
	// also serves Mirrored's registries.
	Registry string
	// Mirrored are registries fetched from Registry instead (no upstream).
	Mirrored []string
	// Pause is the sandbox image.
	Pause string
}

// cri is a real containerd (with its CRI plugin) that this test run starts
// with its own root, state, socket, registry configuration and CNI
// network, with the cocoon runtime handler beside runc, driven by crictl.
// Containerd is a running containerd.
type Containerd struct {
	// Dir holds everything of this containerd; Sock is its CRI endpoint.
	Dir, Sock string
	// Root is the cocoon runtime's state directory (its sandboxes under
	// cri/, the simulated secure processor under sim/).
	Root    string
	Tools   string
	LogPath string
	// Bridge and Subnet (10.213.N) are the pods' network.
	Bridge, Subnet string
	cmd            *exec.Cmd
	opts           Options
}

// Start writes containerd's configuration and starts it; Stop undoes
// everything.
func Start(o Options) (*Containerd, error) {
	dir, err := os.MkdirTemp("", "cocoon-cri")
	if err != nil {
		return nil, err
	}
	var id [2]byte
	_, _ = rand.Read(id[:])
	c := &Containerd{Dir: dir, Sock: filepath.Join(dir, "containerd.sock"), Tools: o.Tools, opts: o,
		Root: filepath.Join(dir, "cocoon"), LogPath: filepath.Join(dir, "containerd.log"),
		Bridge: "cct" + hex.EncodeToString(id[:]), Subnet: fmt.Sprintf("10.213.%d", id[0])}
	if err := c.writeConfig(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf, err := os.Create(c.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c.cmd = exec.Command(filepath.Join(o.Tools, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.Env = append(os.Environ(), "PATH="+o.Tools+":"+os.Getenv("PATH"))
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, _, code := c.Crictl("info"); code == 0 && strings.Contains(out, `"NetworkReady"`) {
			break
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("containerd did not become ready in 30s:\n%s", c.LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c, nil
}

// LogTail is the end of containerd's log.
func (c *Containerd) LogTail(n int) string {
	b, _ := os.ReadFile(c.LogPath)
	return Tail(string(b), n)
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// writeConfig writes containerd's configuration: its own directories, the
// cocoon handlers (with runc's beside them), the registry on loopback over
// plain HTTP, and a bridge network that no pod packet can leave: the
// bridge is the pods' only gateway, nothing is masqueraded and the pods get
// no default route.
func (c *Containerd) writeConfig() error {
	host := c.opts.Registry
	// The loopback registry over plain HTTP, and as the only source of
	// the mirrored registries (no fallback upstream: tests must not reach
	// the internet).
	hosts := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", host, host)
	for _, r := range append([]string{host}, c.opts.Mirrored...) {
		certs := filepath.Join(c.Dir, "certs.d", r)
		if err := os.MkdirAll(certs, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(certs, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return err
		}
	}
	allowAll := filepath.Join(c.Dir, "allow-all.rego")
	if out, err := exec.Command(filepath.Join(c.opts.Bin, "cocoon"), "policy", "allow-all", "--to", allowAll).CombinedOutput(); err != nil {
		return fmt.Errorf("cocoon policy allow-all: %v: %s", err, out)
	}
	netd := filepath.Join(c.Dir, "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil {
		return err
	}
	conflist := map[string]any{
		"cniVersion": "1.0.0", "name": "cocoon-test-" + c.Bridge,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": c.Bridge, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(c.Dir, "ipam"),
				"ranges": []any{[]any{map[string]any{"subnet": c.Subnet + ".0/24"}}}, "routes": []any{}},
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
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = %[6]q

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Sock, c.opts.Pause,
		filepath.Join(c.Dir, "certs.d"), netd)
	conf := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return err
	}
	// The cocoon handlers, added as a user adds them: the second one with
	// an allow-all default policy, for the CRI validation suite, whose
	// pods carry no policy.
	// A third runs pods in VMs (its guest image is <Root>/guest).
	for _, extra := range [][]string{{"--handler", "cocoon"}, {"--handler", "cocoon-allow-all", "--default-policy", allowAll},
		{"--handler", "cocoon-vm", "--isolation", "qemu"}} {
		args := append([]string{"--root", c.Root, "install", "containerd", "--config", conf, "--no-binaries",
			"--bin-dir", c.opts.Bin, "--registry-config-path", filepath.Join(c.Dir, "certs.d")}, extra...)
		if out, err := exec.Command(filepath.Join(c.opts.Bin, "cocoon"), args...).CombinedOutput(); err != nil {
			return fmt.Errorf("cocoon install containerd: %v: %s", err, out)
		}
	}
	return nil
}

// Crictl runs crictl against this containerd: stdout, stderr, exit code
// (-1 when it could not run).
func (c *Containerd) Crictl(args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := c.CrictlCmd(ctx, args...)
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

// CrictlCmd is crictl with args against this containerd, for callers that
// wire its stdio themselves (exec -i, attach).
func (c *Containerd) CrictlCmd(ctx context.Context, args ...string) *exec.Cmd {
	ep := "unix://" + c.Sock
	return exec.CommandContext(ctx, filepath.Join(c.Tools, "crictl"),
		append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "150s"}, args...)...)
}

// Stop removes every pod, stops containerd and removes every trace of it
// (the bridge, mounts, files).
func (c *Containerd) Stop() {
	_, _, _ = c.Crictl("rmp", "-fa")
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
	_ = exec.Command("ip", "link", "del", c.Bridge).Run()
	// Mounts containerd left (snapshots, netns) before the files go.
	_ = exec.Command("sh", "-c", "grep -o ' "+c.Dir+"[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l").Run()
	_ = os.RemoveAll(c.Dir)
}
