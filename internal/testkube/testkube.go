// Package testkube runs a minimal real Kubernetes node for tests: etcd,
// kube-apiserver and a kubelet driving a given containerd, each with its own
// directory and loopback ports, no scheduler and no controllers (pods are
// created with spec.nodeName). scripts/kube-tools.sh builds the binaries.
package testkube

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Missing names a binary Start needs and tools lacks ("" if none).
func Missing(tools string) string {
	for _, b := range []string{"etcd", "kube-apiserver", "kubelet"} {
		if _, err := os.Stat(filepath.Join(tools, b)); err != nil {
			return filepath.Join(tools, b) + " (scripts/kube-tools.sh builds it)"
		}
	}
	return ""
}

// kernelTunables are the sysctls kubelet sets at start (unless told to
// refuse to run when they differ): Stop puts back what they were.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// Node is a running control plane and kubelet.
type Node struct {
	Dir, Name string
	// API is the API server's URL; Token authenticates as an admin.
	API, Token string
	// IP is the node's address: kubelet refuses a loopback one, so it is
	// an address of the benchmarking range (198.18.0.0/15) put on the
	// loopback device for the test, reachable from this machine only.
	IP      string
	procs   []*exec.Cmd
	client  *http.Client
	sysctls map[string]string
	ipAdded bool
	// madeVarLib: /var/lib/kubelet did not exist before the kubelet made
	// it (its device-plugin directory there is fixed).
	madeVarLib bool
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ports(n int) ([]int, error) {
	out := make([]int, n)
	for i := range out {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}

// Start starts etcd, kube-apiserver and a kubelet whose CRI endpoint is
// criSock, and waits until the node is Ready.
func Start(ctx context.Context, tools, criSock string) (*Node, error) {
	dir, err := os.MkdirTemp("", "cocoon-kube")
	if err != nil {
		return nil, err
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	n := &Node{Dir: dir, Name: "cocoon-node-" + hex.EncodeToString(tok[:3]), Token: hex.EncodeToString(tok[:]), sysctls: map[string]string{},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			// The API server's self-signed loopback certificate.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback test server
		}}}
	for _, s := range kernelTunables {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			n.sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	if _, err := os.Stat(varLibKubelet); os.IsNotExist(err) {
		n.madeVarLib = true
	}
	ok := false
	defer func() {
		if !ok {
			n.Stop()
		}
	}()
	n.IP = fmt.Sprintf("198.18.%d.%d", tok[3], 1+tok[4]%250)
	if out, err := exec.Command("ip", "addr", "add", n.IP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("add the node address %s to lo: %v: %s", n.IP, err, out)
	}
	n.ipAdded = true
	p, err := ports(4)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort, kubeletPort := p[0], p[1], p[2], p[3]
	n.API = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	if err := n.start("etcd", filepath.Join(tools, "etcd"),
		"--name", "t", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("t=http://127.0.0.1:%d", etcdPeer)); err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"tokens.csv": []byte(n.Token + ",admin,admin-uid,system:masters\n"),
		"kubeconfig": []byte(fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: %q}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n", n.API, n.Token)),
		"kubelet.yaml": []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzPort: 0
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://%s
podLogsDir: %s
# kubelet's iptables chains are for other components; none runs here.
makeIPTablesUtilChains: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 2s
nodeStatusUpdateFrequency: 2s
`, n.IP, kubeletPort, criSock, filepath.Join(dir, "pod-logs"))),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	if err := n.start("kube-apiserver", filepath.Join(tools, "kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--secure-port", strconv.Itoa(apiPort), "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"), "--authorization-mode", "AlwaysAllow",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range", "10.213.255.0/24",
		// No controllers run: pods need no service account object.
		"--disable-admission-plugins", "ServiceAccount",
		"--kubelet-preferred-address-types", "InternalIP",
		"--enable-priority-and-fairness=false"); err != nil {
		return nil, err
	}
	if err := n.waitFor(ctx, 90*time.Second, "the API server", func() bool {
		b, err := n.Get(ctx, "/readyz")
		return err == nil && strings.TrimSpace(string(b)) == "ok"
	}); err != nil {
		return nil, err
	}
	if err := n.start("kubelet", filepath.Join(tools, "kubelet"),
		"--config", filepath.Join(dir, "kubelet.yaml"), "--kubeconfig", filepath.Join(dir, "kubeconfig"),
		"--root-dir", filepath.Join(dir, "kubelet"), "--cert-dir", filepath.Join(dir, "kubelet-pki"), "--hostname-override", n.Name, "--node-ip", n.IP, "--v", "2"); err != nil {
		return nil, err
	}
	if err := n.waitFor(ctx, 2*time.Minute, "the node to be Ready", func() bool {
		var node struct {
			Status struct {
				Conditions []struct{ Type, Status string }
			}
		}
		if n.GetJSON(ctx, "/api/v1/nodes/"+n.Name, &node) != nil {
			return false
		}
		for _, c := range node.Status.Conditions {
			if c.Type == "Ready" && c.Status == "True" {
				return true
			}
		}
		return false
	}); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// start runs a component with its output in DIR/NAME.log.
func (n *Node) start(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(n.Dir, name+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	n.procs = append(n.procs, cmd)
	return nil
}

func (n *Node) waitFor(ctx context.Context, within time.Duration, what string, ok func() bool) error {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s; logs in %s:\n%s", within, what, n.Dir, n.LogTails(15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// LogTails is the end of each component's log.
func (n *Node) LogTails(lines int) string {
	var b strings.Builder
	for _, c := range []string{"etcd", "kube-apiserver", "kubelet"} {
		raw, err := os.ReadFile(filepath.Join(n.Dir, c+".log"))
		if err != nil {
			continue
		}
		l := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(l) > lines {
			l = l[len(l)-lines:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", c, strings.Join(l, "\n"))
	}
	return b.String()
}

// Do sends a request to the API server and returns the body of a 2xx answer.
func (n *Node) Do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.API+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+n.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return b, nil
}

// Get is Do with GET.
func (n *Node) Get(ctx context.Context, path string) ([]byte, error) {
	return n.Do(ctx, http.MethodGet, path, nil)
}

// GetJSON decodes a GET's answer into v.
func (n *Node) GetJSON(ctx context.Context, path string, v any) error {
	b, err := n.Get(ctx, path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Stop stops the kubelet, the API server and etcd (in that order), unmounts
// what the kubelet left, restores the kernel tunables kubelet set and
// removes the directory.
func (n *Node) Stop() {
	for i := len(n.procs) - 1; i >= 0; i-- {
		p := n.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	if n.ipAdded {
		_ = exec.Command("ip", "addr", "del", n.IP+"/32", "dev", "lo").Run()
	}
	for s, v := range n.sysctls {
		_ = os.WriteFile("/proc/sys/"+s, []byte(v), 0o644)
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		lines := strings.Split(string(b), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			f := strings.Fields(lines[i])
			if len(f) > 4 && strings.HasPrefix(f[4], n.Dir+"/") {
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
	}
	if n.madeVarLib {
		_ = os.RemoveAll(varLibKubelet)
	}
	_ = os.RemoveAll(n.Dir)
}

const varLibKubelet = "/var/lib/kubelet"
