package policygen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/testimage"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
)

// fixture writes a two-layer image into an OCI layout and a pod using it.
func fixture(t testing.TB, containers int) (*pod.Pod, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := testimage.Layer([]testimage.File{{Path: "/srv/server", Data: []byte("#!/bin/sh\n"), Mode: 0o755}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Image(v1.Config{Entrypoint: []string{"/srv/server"}, Cmd: []string{"--port", "80"}, Env: []string{"PATH=/bin", "MODE=prod"}, WorkingDir: "/srv"}, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := testimage.WriteLayout(filepath.Join(dir, "layout"), map[string]v1.Image{"web": img}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata: {name: shop}\nspec:\n  volumes: [{name: cache, emptyDir: {}}]\n  containers:\n")
	for i := 0; i < containers; i++ {
		name := "web"
		if i > 0 {
			name = fmt.Sprintf("web%d", i)
		}
		fmt.Fprintf(&b, "  - name: %s\n    image: oci:%s/layout:web\n    env: [{name: GREETING, value: secret-value}]\n    volumeMounts: [{name: cache, mountPath: /cache}]\n", name, dir)
	}
	p, err := pod.Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return p, dir
}

func evaluator(t testing.TB, p *pod.Pod, o GenerateOptions) *policy.Evaluator {
	t.Helper()
	pol, err := Generate(context.Background(), p, o)
	if err != nil {
		t.Fatal(err)
	}
	text, err := policy.Render(pol)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := policy.Render(pol)
	if string(again) != string(text) {
		t.Fatal("rendering is not deterministic")
	}
	ev, err := policy.NewEvaluator(context.Background(), text)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func decide(t testing.TB, ev *policy.Evaluator, method string, req any, st *policy.State) (bool, []string) {
	t.Helper()
	if st == nil {
		st = &policy.State{Created: map[string]bool{}, Running: map[string]bool{}}
	}
	pulled := map[string]policy.PulledImage{}
	for ref, img := range ev.Policy.Images {
		pulled[ref] = policy.PulledImage{Digest: img.Digest, ConfigDigest: img.ConfigDigest}
	}
	in, err := policy.Input(ev.Policy, method, req, st, pulled, ev.Policy.Sandbox.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	ok, reasons, err := ev.Decide(context.Background(), method, in)
	if err != nil {
		t.Fatal(err)
	}
	return ok, reasons
}

func TestDecisions(t *testing.T) {
	p, _ := fixture(t, 1)
	ev := evaluator(t, p, GenerateOptions{})
	web := p.Main[0].Spec
	clone := func(mut func(*agentv1.ContainerSpec)) *agentv1.CreateContainerRequest {
		s := &agentv1.ContainerSpec{Name: web.Name, Image: web.Image, Env: web.Env, Mounts: web.Mounts}
		mut(s)
		return &agentv1.CreateContainerRequest{Spec: s}
	}
	running := &policy.State{Created: map[string]bool{"web": true}, Running: map[string]bool{"web": true}}
	cases := []struct {
		name   string
		method string
		req    any
		st     *policy.State
		want   string // "" = allowed
	}{
		{"create as generated", "CreateContainer", clone(func(*agentv1.ContainerSpec) {}), nil, ""},
		{"changed arg", "CreateContainer", clone(func(s *agentv1.ContainerSpec) { s.Args = []string{"sh", "80"} }), nil, `create_container "web": args[1] = "sh", policy allows "--port"`},
		{"changed command", "CreateContainer", clone(func(s *agentv1.ContainerSpec) { s.Command = []string{"/bin/sh"} }), nil, `create_container "web": args = ["/bin/sh"], policy allows ["/srv/server","--port","80"]`},
		{"env value redacted", "CreateContainer", clone(func(s *agentv1.ContainerSpec) {
			s.Env = []*agentv1.EnvVar{{Name: "GREETING", Value: "other-value"}}
		}), nil, `env GREETING=<redacted> is not allowed by the policy`},
		{"platform env allowed", "CreateContainer", clone(func(s *agentv1.ContainerSpec) {
			s.Env = append(append([]*agentv1.EnvVar{}, web.Env...), &agentv1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: "10.0.0.1"})
		}), nil, ""},
		{"workdir", "CreateContainer", clone(func(s *agentv1.ContainerSpec) { s.WorkingDir = "/" }), nil, `working_dir = "/", policy allows "/srv"`},
		{"read-only flip", "CreateContainer", clone(func(s *agentv1.ContainerSpec) { s.NoNewPrivileges = true }), nil, "no_new_privileges = true, policy allows false"},
		{"create twice", "CreateContainer", clone(func(*agentv1.ContainerSpec) {}), running, "already exists"},
		{"pull other", "PullImage", &agentv1.PullImageRequest{Image: "evil"}, nil, `pull_image: image "evil" is not in the policy`},
		{"exec", "ExecProcess", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"sh"}}, running, `exec_process "web": args = ["sh"], policy allows no exec`},
		{"exec not running", "ExecProcess", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"sh"}}, nil, "not running"},
		{"start uncreated", "StartContainer", &agentv1.StartContainerRequest{Container: "web"}, nil, "did not allow creating it"},
		{"start created", "StartContainer", &agentv1.StartContainerRequest{Container: "web"}, running, ""},
		{"logs", "ReadLogs", &agentv1.ReadLogsRequest{Container: "web"}, running, ""},
		{"signal ok", "SignalContainer", &agentv1.SignalContainerRequest{Container: "web", Signal: 15}, running, ""},
		{"signal bad", "SignalContainer", &agentv1.SignalContainerRequest{Container: "web", Signal: 10}, running, "signal = 10"},
		{"sandbox", "CreateSandbox", &agentv1.CreateSandboxRequest{Name: "shop", Volumes: []*agentv1.EmptyDir{{Name: "cache"}}}, nil, ""},
		{"sandbox hostname", "CreateSandbox", &agentv1.CreateSandboxRequest{Name: "shop", Hostname: "evil", Volumes: []*agentv1.EmptyDir{{Name: "cache"}}}, nil, `hostname = "evil"`},
		{"sandbox volume", "CreateSandbox", &agentv1.CreateSandboxRequest{Name: "shop"}, nil, "volumes = []"},
	}
	for _, tc := range cases {
		ok, reasons := decide(t, ev, tc.method, tc.req, tc.st)
		switch {
		case tc.want == "" && !ok:
			t.Errorf("%s: denied: %v", tc.name, reasons)
		case tc.want != "" && ok:
			t.Errorf("%s: allowed, want a denial with %q", tc.name, tc.want)
		case tc.want != "" && !strings.Contains(strings.Join(reasons, "; "), tc.want):
			t.Errorf("%s: reasons %q do not contain %q", tc.name, reasons, tc.want)
		}
		if strings.Contains(strings.Join(reasons, ""), "other-value") || strings.Contains(strings.Join(reasons, ""), "secret-value") {
			t.Errorf("%s: a denial shows an env value: %v", tc.name, reasons)
		}
	}
	// A debug policy shows env values and allows exec.
	dbg := evaluator(t, p, GenerateOptions{Debug: true})
	ok, reasons := decide(t, dbg, "CreateContainer", clone(func(s *agentv1.ContainerSpec) {
		s.Env = []*agentv1.EnvVar{{Name: "GREETING", Value: "other-value"}}
	}), nil)
	if ok || !strings.Contains(strings.Join(reasons, ""), "GREETING=other-value") {
		t.Errorf("debug env: %v %v", ok, reasons)
	}
	if ok, _ := decide(t, dbg, "ExecProcess", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"sh"}}, running); !ok {
		t.Error("debug policy refused exec")
	}
	// An allowed exec (a health check) cannot be given env, a working
	// directory or a script on stdin: the attack was BASH_ENV=/proc/self/fd/0
	// with a script as stdin.
	hc := &Settings{Signals: []int{15}, Exec: [][]string{{"/bin/check"}}}
	execEv := evaluator(t, p, GenerateOptions{Settings: hc})
	execCases := []struct {
		name string
		req  *agentv1.ExecProcessRequest
		want string
	}{
		{"allowed", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"/bin/check"}}, ""},
		{"env", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"/bin/check"}, Env: []*agentv1.EnvVar{{Name: "BASH_ENV", Value: "/proc/self/fd/0"}}}, `env = [BASH_ENV=<redacted>], policy allows none`},
		{"working dir", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"/bin/check"}, WorkingDir: "/tmp"}, `working_dir = "/tmp", policy allows none`},
		{"stdin", &agentv1.ExecProcessRequest{Container: "web", Args: []string{"/bin/check"}, Stdin: []byte("cat /secret\n")}, "stdin of 12 bytes, policy allows none"},
	}
	for _, tc := range execCases {
		ok, reasons := decide(t, execEv, "ExecProcess", tc.req, running)
		if tc.want == "" {
			if !ok {
				t.Errorf("exec %s: denied: %v", tc.name, reasons)
			}
			continue
		}
		if ok || !strings.Contains(strings.Join(reasons, "; "), tc.want) {
			t.Errorf("exec %s: %v %v, want a denial with %q", tc.name, ok, reasons, tc.want)
		}
	}
	hc.ExecStdin = true
	if ok, r := decide(t, evaluator(t, p, GenerateOptions{Settings: hc}), "ExecProcess", execCases[3].req, running); !ok {
		t.Errorf("exec_stdin = true refused stdin: %v", r)
	}
	// Resources are pinned as the pod spec sets them.
	if ok, r := decide(t, ev, "CreateContainer", clone(func(s *agentv1.ContainerSpec) {
		s.Resources = &agentv1.Resources{MemoryLimitBytes: 1 << 20}
	}), nil); ok || !strings.Contains(strings.Join(r, ""), `resources = {"cpu_limit_millis":0,"memory_limit_bytes":1048576}`) {
		t.Errorf("changed resources: %v %v", ok, r)
	}
	stdio := evaluator(t, p, GenerateOptions{DisableStdio: true})
	if ok, r := decide(t, stdio, "ReadLogs", &agentv1.ReadLogsRequest{Container: "web"}, running); ok || !strings.Contains(r[0], "stdio = false") {
		t.Errorf("stdio disabled: %v %v", ok, r)
	}
}

func TestParseRefusesBadPolicies(t *testing.T) {
	p, _ := fixture(t, 1)
	pol, _ := Generate(context.Background(), p, GenerateOptions{})
	text, _ := policy.Render(pol)
	for name, bad := range map[string]string{
		"not rego":       "hello",
		"unknown field":  strings.Replace(string(text), `"debug": false`, `"debug": false, "extra": 1`, 1),
		"other version":  strings.Replace(string(text), `"framework_version": "1"`, `"framework_version": "9"`, 1),
		"unpinned image": strings.Replace(string(text), `"image": "oci:`, `"image": "x`, 1),
	} {
		if _, err := policy.Parse([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestGenerateCacheAndSettings(t *testing.T) {
	p, _ := fixture(t, 1)
	cache := t.TempDir()
	if _, err := Generate(context.Background(), p, GenerateOptions{CacheDir: cache}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(cache)
	if len(ents) != 1 {
		t.Errorf("cache entries %d, want 1", len(ents))
	}
	if _, err := ParseSettings([]byte(`{"env_patterns": ["HOSTNAME=.*"]}`)); err == nil {
		t.Error("unanchored env pattern accepted")
	}
	if _, err := ParseSettings(DefaultSettingsJSON()); err != nil {
		t.Error(err)
	}
}

func FuzzEngineInput(f *testing.F) {
	p, _ := fixture(f, 1)
	ev := evaluator(f, p, GenerateOptions{})
	methods := make([]string, 0, len(policy.Rules()))
	for m := range policy.Rules() {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	f.Add(uint8(3), "web", "sh", "A=B", int32(15), true)
	f.Add(uint8(0), "", "", "", int32(0), false)
	f.Fuzz(func(t *testing.T, m uint8, name, arg, env string, sig int32, created bool) {
		method := methods[int(m)%len(methods)]
		reqs := map[string]any{
			"CreateContainer": &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: name, Image: arg, Command: []string{arg}, Env: []*agentv1.EnvVar{{Name: env, Value: arg}}, CapabilitiesAdd: []string{arg}}},
			"ExecProcess":     &agentv1.ExecProcessRequest{Container: name, Args: []string{arg}},
			"SignalContainer": &agentv1.SignalContainerRequest{Container: name, Signal: sig},
			"CreateSandbox":   &agentv1.CreateSandboxRequest{Name: name, Hostname: arg},
			"PullImage":       &agentv1.PullImageRequest{Image: arg},
			"ReadLogs":        &agentv1.ReadLogsRequest{Container: name},
			"StartContainer":  &agentv1.StartContainerRequest{Container: name},
		}
		req, ok := reqs[method]
		if !ok {
			return
		}
		st := &policy.State{Created: map[string]bool{name: created}, Running: map[string]bool{name: created}}
		in, err := policy.Input(ev.Policy, method, req, st, nil, "shop")
		if err != nil {
			t.Fatal(err)
		}
		allowed, reasons, err := ev.Decide(context.Background(), method, in)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		if !allowed && len(reasons) == 0 {
			t.Fatalf("%s: denied without a reason", method)
		}
		if method == "CreateContainer" && allowed {
			t.Fatalf("a fuzzed container was allowed: %+v", req)
		}
	})
}

// BenchmarkDecide measures decision latency with a 10-container policy and
// reports p50 and p99.
func BenchmarkDecide(b *testing.B) {
	// As cocoon-agent runs (see policy.AgentGCPercent).
	defer debug.SetGCPercent(debug.SetGCPercent(policy.AgentGCPercent))
	p, _ := fixture(b, 10)
	ev := evaluator(b, p, GenerateOptions{})
	web := p.Main[3].Spec
	running := &policy.State{Created: map[string]bool{web.Name: true}, Running: map[string]bool{web.Name: true}}
	for _, bc := range []struct {
		method string
		req    any
		st     *policy.State
	}{
		{"CreateContainer", &agentv1.CreateContainerRequest{Spec: web}, &policy.State{Created: map[string]bool{}, Running: map[string]bool{}}},
		{"ExecProcess", &agentv1.ExecProcessRequest{Container: web.Name, Args: []string{"sh"}}, running},
	} {
		b.Run(bc.method, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				start := time.Now()
				decide(b, ev, bc.method, bc.req, bc.st)
				lat = append(lat, time.Since(start))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// TestSettingsOverlayDefaults: a settings file overrides only the fields it
// gives; an explicit empty list clears a default.
func TestSettingsOverlayDefaults(t *testing.T) {
	def := DefaultSettings()
	s, err := ParseSettings([]byte(`{"exec": [["/bin/true"]]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Exec) != 1 || len(s.Signals) != len(def.Signals) || len(s.EnvPatterns) != len(def.EnvPatterns) {
		t.Errorf("partial file: %+v", s)
	}
	s, err = ParseSettings([]byte(`{"signals": []}`))
	if err != nil || len(s.Signals) != 0 {
		t.Errorf("explicit empty list: %+v %v", s, err)
	}
	if len(DefaultSettings().Signals) == 0 {
		t.Error("parsing a file changed the defaults")
	}
}
