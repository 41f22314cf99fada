package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/testimage"
)

// recorder is an Enforcer that records every method it saw and denies the
// ones listed.
type recorder struct {
	mu   sync.Mutex
	seen []string
	deny map[string]bool
}

func (r *recorder) Check(_ context.Context, method string, _ any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, method)
	if r.deny[method] {
		return &DenyError{Method: method, Reason: "test policy"}
	}
	return nil
}

func startAgent(t *testing.T, e Enforcer) (*Agent, agentv1.AgentService) {
	t.Helper()
	return startAgentWith(t, func(c *Config) { c.Enforcer = e })
}

func startAgentWith(t *testing.T, mod func(*Config)) (*Agent, agentv1.AgentService) {
	t.Helper()
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{StateDir: filepath.Join(dir, "state"), LayerDir: filepath.Join(dir, "layers"),
		CgroupParent: "/cocoon-test/" + filepath.Base(dir)}
	mod(&cfg)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = a.Serve(context.Background(), l); close(served) }()
	conn, err := net.Dial("unix", filepath.Join(dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		a.Close()
		<-served
		c.Close()
		os.RemoveAll(dir)
	})
	return a, agentv1.NewAgentClient(c)
}

// TestEveryMethodIsEnforced fails when an API method has no enforcement
// point: the list of methods is compared with the generated service, and
// every method is called to show the hook saw it.
func TestEveryMethodIsEnforced(t *testing.T) {
	var generated []string
	it := reflect.TypeOf((*agentv1.AgentService)(nil)).Elem()
	for i := 0; i < it.NumMethod(); i++ {
		generated = append(generated, it.Method(i).Name)
	}
	listed := slices.Clone(agentv1.Methods())
	sort.Strings(generated)
	sort.Strings(listed)
	if !slices.Equal(generated, listed) {
		t.Fatalf("API methods %v, enforcement list %v", generated, listed)
	}
	rec := &recorder{deny: map[string]bool{}}
	for _, m := range listed {
		rec.deny[m] = true // deny all: nothing may happen
	}
	_, cl := startAgent(t, rec)
	v := reflect.ValueOf(cl)
	ctx := context.Background()
	for _, m := range listed {
		meth := v.MethodByName(m)
		req := reflect.New(meth.Type().In(1).Elem())
		out := meth.Call([]reflect.Value{reflect.ValueOf(ctx), req})
		err, _ := out[1].Interface().(error)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), m+" denied") {
			t.Errorf("%s: got %v, want a denial from the hook", m, err)
		}
	}
	if !slices.Equal(sortedCopy(rec.seen), listed) {
		t.Errorf("hook saw %v", rec.seen)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

func needRunc(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("runc is missing")
		}
		t.Skip("needs runc")
	}
}

func TestDenialLeavesNothing(t *testing.T) {
	needRunc(t)
	reg := testimage.NewRegistry()
	defer reg.Close()
	img, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	_, ref, _ := reg.Push("bb:v1", img)
	a, cl := startAgent(t, testEnforcer{})
	ctx := context.Background()
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PullImage(ctx, &agentv1.PullImageRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: "x", Image: ref, Privileged: true}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `container "x" asks to be privileged`) {
		t.Fatalf("privileged: %v", err)
	}
	ls, _ := cl.ListContainers(ctx, &agentv1.ListContainersRequest{})
	if len(ls.GetContainers()) != 0 {
		t.Errorf("containers after denial: %v", ls.GetContainers())
	}
	if ents, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, "containers")); len(ents) != 0 {
		t.Errorf("bundle left after denial: %v", ents)
	}
}

func TestContainerLifecycle(t *testing.T) {
	needRunc(t)
	reg := testimage.NewRegistry()
	defer reg.Close()
	img, _ := testimage.Busybox()
	_, ref, _ := reg.Push("bb:v1", img)
	_, cl := startAgent(t, testEnforcer{})
	ctx := context.Background()
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p", Volumes: []*agentv1.EmptyDir{{Name: "v"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second CreateSandbox: %v", err)
	}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: "c", Image: ref}}); status.Code(err) != codes.NotFound {
		t.Errorf("create before pull: %v", err)
	}
	if _, err := cl.PullImage(ctx, &agentv1.PullImageRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	spec := &agentv1.ContainerSpec{Name: "c", Image: ref, Command: []string{"sh", "-c", "echo hello; trap 'echo bye; exit 5' TERM; while true; do sleep 0.05; done"},
		Mounts: []*agentv1.VolumeMount{{Volume: "v", MountPath: "/v"}}}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: spec}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("second create: %v", err)
	}
	if _, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "c", Args: []string{"true"}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("exec before start: %v", err)
	}
	if _, err := cl.StartContainer(ctx, &agentv1.StartContainerRequest{Container: "c"}); err != nil {
		t.Fatal(err)
	}
	// Concurrent log readers and execs while the container runs.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: "c", WaitMs: 2000})
			if err != nil || !strings.HasPrefix(string(r.GetData()), "hello") {
				t.Errorf("logs: %q %v", r.GetData(), err)
			}
		}()
		go func() {
			defer wg.Done()
			r, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "c", Args: []string{"sh", "-c", "echo x >> /v/f; exit 3"}})
			if err != nil || r.GetExitCode() != 3 {
				t.Errorf("exec: %v %v", r, err)
			}
		}()
	}
	wg.Wait()
	r, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "c", Args: []string{"wc", "-l", "/v/f"}})
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(r.GetStdout())), "4") {
		t.Errorf("shared volume: %q %v", r.GetStdout(), err)
	}
	if _, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "c", Args: []string{"sleep", "10"}, TimeoutSeconds: 1}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("exec timeout: %v", err)
	}
	if st, err := cl.Stats(ctx, &agentv1.StatsRequest{Container: "c"}); err != nil || st.GetPids() == 0 {
		t.Errorf("stats: %v %v", st, err)
	}
	if _, err := cl.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: "c"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("remove while running: %v", err)
	}
	if _, err := cl.SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: "c", Signal: 15}); err != nil {
		t.Fatal(err)
	}
	w, err := cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: "c", TimeoutMs: 10000})
	if err != nil || !w.GetExited() || w.GetExitCode() != 5 {
		t.Fatalf("wait: %v %v", w, err)
	}
	var all []byte
	var off int64
	for {
		r, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: "c", Offset: off})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r.GetData()...)
		off = r.GetNextOffset()
		if r.GetEof() {
			break
		}
	}
	if string(all) != "hello\nbye\n" {
		t.Errorf("full log %q", all)
	}
	if _, err := cl.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: "c"}); err != nil {
		t.Fatal(err)
	}
	// Logs outlive the container, and the name can be used again.
	if _, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: "c"}); err != nil {
		t.Errorf("logs after remove: %v", err)
	}
	spec.Command = []string{"true"}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
}

// testEnforcer serves every request except privileged containers: it lets
// the agent's mechanics be tested without a policy bound to a TEE. The
// agent itself never uses it (its enforcer is the policy engine).
type testEnforcer struct{}

func (testEnforcer) Check(_ context.Context, method string, req any) error {
	if r, ok := req.(*agentv1.CreateContainerRequest); ok && r.GetSpec().GetPrivileged() {
		return &DenyError{Method: method, Reason: fmt.Sprintf("container %q asks to be privileged; privileged containers could reach the sandbox's kernel and devices and are refused", r.GetSpec().GetName())}
	}
	return nil
}
