package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/vectors"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func testPolicy(t *testing.T, name string) []byte {
	t.Helper()
	p := &policy.Policy{
		Sandbox: policy.Sandbox{Name: name, Hostname: name, Volumes: []policy.Volume{}},
		Containers: map[string]*policy.Container{"c": {Image: "img", Args: []string{"true"}, Env: []string{},
			EnvPatterns: []string{}, Capabilities: []string{}, Mounts: []policy.Mount{}, Exec: [][]string{}, Signals: []int{15}}},
		Images: map[string]policy.Image{"img": {Digest: "sha256:00", Entrypoint: []string{}, Cmd: []string{}, Env: []string{}, Layers: []string{}}},
	}
	text, err := policy.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TestPolicyBinding: a policy whose hash is not the report's HOST_DATA is
// refused, naming both hashes, and everything stays denied; the launched
// policy is accepted once.
func TestPolicyBinding(t *testing.T) {
	launched := testPolicy(t, "p")
	other := testPolicy(t, "q")
	ctx := context.Background()
	a, cl := startSimAgent(t, launched)
	_, err := cl.PullImage(ctx, &agentv1.PullImageRequest{Image: "img"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no policy is loaded") {
		t.Errorf("before a policy: %v", err)
	}
	_, err = cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "q", Policy: other})
	wantHash, gotHash := sha256.Sum256(other), sha256.Sum256(launched)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), hex.EncodeToString(wantHash[:])) || !strings.Contains(err.Error(), "HOST_DATA "+hex.EncodeToString(gotHash[:])) {
		t.Fatalf("mismatched policy: %v", err)
	}
	_, err = cl.ListContainers(ctx, &agentv1.ListContainersRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("after a refused policy: %v", err)
	}
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p", Policy: launched}); err != nil {
		t.Fatalf("the launched policy: %v", err)
	}
	if _, err := cl.ListContainers(ctx, &agentv1.ListContainersRequest{}); err != nil {
		t.Errorf("after the policy: %v", err)
	}
	_, err = cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p", Policy: launched})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "set once") {
		t.Errorf("second policy: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.cfg.StateDir, "pod", "hosts")); err != nil {
		t.Errorf("allowed CreateSandbox did not run: %v", err)
	}
}

// TestAllowAllPolicy: under an allow-all policy the host's requests pass
// the policy, but the agent still never runs a privileged container and
// fetches no secret (for the in-pod API or an encrypted volume).
func TestAllowAllPolicy(t *testing.T) {
	text, err := policy.Render(&policy.Policy{AllowAll: true, KBS: &policy.KBS{URL: "https://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, cl := startSimAgent(t, text)
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "anything", Hostname: "any-host", Policy: text}); err != nil {
		t.Fatalf("allow-all sandbox: %v", err)
	}
	_, err = cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: "x", Image: "img", Privileged: true}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "privileged containers never run") {
		t.Fatalf("privileged under allow-all: %v", err)
	}
	if _, err := a.resource(ctx, "app", "db", "password"); err == nil || !strings.Contains(err.Error(), "allow-all") {
		t.Fatalf("secret under allow-all: %v", err)
	}
	if _, err := a.openEncrypted(ctx, &agentv1.EncryptedVolume{Name: "v", Source: "/nonexistent", KeyUri: "kbs:///a/b/c"}); err == nil || !strings.Contains(err.Error(), "allow-all") {
		t.Fatalf("encrypted volume under allow-all: %v", err)
	}
}

// startSimAgent starts an agent whose simulated secure processor launched
// it with the policy text as HOST_DATA.
func startSimAgent(t *testing.T, launched []byte) (*Agent, agentv1.AgentService) {
	t.Helper()
	dir := t.TempDir()
	auth, err := sim.LoadOrCreate(filepath.Join(dir, "sim"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go sim.NewServer(auth, sim.Launch{HostData: sha256.Sum256(launched)}).Serve(ctx, l)
	return startAgentWith(t, func(c *Config) { c.Attester = sim.NewClient(sock) })
}

// TestLaunchDataTDXv5: the policy binding reads MRCONFIGID from a TDX 1.5
// (version 5) quote too — the real one of the evidence vectors.
func TestLaunchDataTDXv5(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "tdx", "quote-5.dat"))
	if err != nil {
		t.Fatal(err)
	}
	got, field, err := launchData(&tee.Evidence{TEE: tee.TDX, Report: raw})
	if err != nil || field != "MRCONFIGID" || len(got) != 48 || !bytes.Equal(got, raw[54+184:54+232]) {
		t.Fatalf("%x %s %v", got, field, err)
	}
}
