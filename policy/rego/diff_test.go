package rego

import (
	"context"
	"reflect"
	"sort"
	"testing"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/policy"
)

// testPolicies are policies with every feature the framework looks at.
func testPolicies(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, debug := range []bool{false, true} {
		p := &policy.Policy{
			Debug: debug,
			Sandbox: policy.Sandbox{Name: "shop", Hostname: "shop", Volumes: []policy.Volume{{Name: "cache"}, {Name: "tmp", SizeLimitBytes: 1 << 20}},
				Sysctls:          map[string]string{"net.ipv4.ip_local_port_range": "1024 65000"},
				EncryptedVolumes: []policy.EncryptedVolume{{Name: "data", Source: "/v.img", Key: "kbs:///a/b/c"}},
				SealedVolumes:    []policy.SealedVolume{{Name: "creds", Files: []policy.SealedFile{{Path: "a", Value: "sealed.x.y.z", Mode: 0o400}, {Path: "b/c", Value: "sealed.u.v.w", Mode: 0o644}}}}},
			Containers: map[string]*policy.Container{
				"web": {Kind: "main", Image: "reg/web:1", Args: []string{"/srv/web", "--port", "80"},
					Env: []string{"PATH=/bin", "MODE=prod"}, EnvPatterns: []string{"^HOSTNAME=[a-z0-9-]+$", "^KUBERNETES_[A-Z_]+=[0-9.]+$"},
					WorkingDir: "/srv", RunAsUser: -1, RunAsGroup: -1, Capabilities: []string{"CAP_CHOWN", "CAP_KILL"},
					Mounts:    []policy.Mount{{Volume: "cache", Path: "/cache"}, {Volume: "data", Path: "/data", ReadOnly: true}},
					Resources: policy.Resources{MemoryLimitBytes: 64 << 20, CPULimitMillis: 500},
					Exec:      [][]string{{"/bin/check"}, {"cat", "/tmp/<x>&"}}, ExecAny: debug, ExecStdin: false, Signals: []int{9, 15}, Stdio: true},
				"job": {Kind: "init", Image: "reg/job:1", Args: []string{"sh", "-c", "echo done"}, Env: []string{}, EnvPatterns: []string{},
					WorkingDir: "/", RunAsUser: 1000, RunAsGroup: 1000, RunAsNonRoot: true, ReadOnlyRootFilesystem: true, NoNewPrivileges: true,
					Capabilities: []string{}, Mounts: []policy.Mount{}, Exec: [][]string{}, ExecStdin: true, Signals: []int{15}, Stdio: debug,
					SharePIDNamespace: true, SupplementalGroups: []int64{2000, 1000}, Stdin: true, TTY: true, Seccomp: seccompDigest(t, seccompProfiles[1])},
			},
			Images: map[string]policy.Image{
				"reg/web:1": {Digest: "sha256:aa", ConfigDigest: "sha256:ab", Layers: []string{}, Entrypoint: []string{"/srv/web"}, Cmd: []string{"--port", "80"}, Env: []string{"PATH=/bin"}, WorkingDir: "/srv"},
				"reg/job:1": {Digest: "sha256:ba", ConfigDigest: "sha256:bb", Layers: []string{}, Entrypoint: []string{}, Cmd: []string{"sh"}, Env: []string{}},
			},
			KBS: &policy.KBS{URL: "https://kbs.example"},
		}
		text, err := policy.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, text)
		if debug {
			continue
		}
		// The same policy with every list it may omit left null, as a
		// hand-written policy could have them.
		c := p.Containers["job"]
		c.Args, c.Env, c.EnvPatterns, c.Capabilities, c.Mounts, c.Exec, c.Signals = nil, nil, nil, nil, nil, nil, nil
		p.Sandbox.Volumes, p.Sandbox.EncryptedVolumes = nil, nil
		text, err = policy.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, text)
		// A workload template's policy: the hostname is the replica's.
		p.Sandbox.Hostname = ""
		text, err = policy.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, text)
		// Images trusted by signer: one with its digests left out, one
		// with them pinned as well.
		web := p.Images["reg/web:1"]
		web.SignedBy, web.Digest, web.ConfigDigest = []policy.Signer{{Key: "PEM"}}, "", ""
		p.Images["reg/web:1"] = web
		job := p.Images["reg/job:1"]
		job.SignedBy = []policy.Signer{{Identity: "ci@example.com", Issuer: "https://issuer.example", TrustedRoot: "{}"}}
		p.Images["reg/job:1"] = job
		text, err = policy.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, text)
	}
	// An allow-all policy, with and without containers.
	for _, withContainers := range []bool{false, true} {
		p := &policy.Policy{AllowAll: true, Containers: map[string]*policy.Container{}, Images: map[string]policy.Image{}}
		if withContainers {
			p.Containers["web"] = &policy.Container{Image: "reg/web:1", Args: []string{"/srv/web"}, RunAsUser: -1, RunAsGroup: -1}
			p.Images["reg/web:1"] = policy.Image{Digest: "sha256:aa"}
		}
		text, err := policy.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, text)
	}
	return out
}

// picker draws choices from fuzz bytes.
type picker struct{ b []byte }

func (p *picker) pick(n int) int {
	if len(p.b) == 0 || n <= 1 {
		return 0
	}
	v := int(p.b[0]) % n
	p.b = p.b[1:]
	return v
}

func (p *picker) str(choices ...string) string { return choices[p.pick(len(choices))] }

func (p *picker) strs(choices ...string) []string {
	var out []string
	for i := p.pick(4); i > 0; i-- {
		out = append(out, p.str(choices...))
	}
	return out
}

// request makes a request of the method from the picker's bytes, with
// values near what the policies allow (so that both allowed and denied
// paths run).
func (p *picker) request(method string) any {
	name := p.str("web", "job", "nope", "")
	env := func() []*agentv1.EnvVar {
		var out []*agentv1.EnvVar
		for i := p.pick(4); i > 0; i-- {
			out = append(out, &agentv1.EnvVar{Name: p.str("PATH", "MODE", "HOSTNAME", "KUBERNETES_PORT", "LD_PRELOAD", "X<&>"), Value: p.str("/bin", "prod", "shop", "10.0.0.1", "evil")})
		}
		return out
	}
	switch method {
	case "CreateSandbox":
		r := &agentv1.CreateSandboxRequest{Name: p.str("shop", "other"), Hostname: p.str("", "shop", "evil"), Sysctls: map[string]string{}}
		for i := p.pick(4); i > 0; i-- {
			k := p.str("net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ping_group_range", "kernel.shmmax")
			r.Sysctls[k] = p.str("1024 65000", "0", "0 2147483647", "1")
		}
		for i := p.pick(3); i > 0; i-- {
			r.Volumes = append(r.Volumes, &agentv1.EmptyDir{Name: p.str("cache", "tmp", "x"), SizeLimitBytes: int64(p.pick(2)) << 20})
		}
		if p.pick(2) == 1 {
			r.EncryptedVolumes = append(r.EncryptedVolumes, &agentv1.EncryptedVolume{Name: "data", Source: p.str("/v.img", "/w.img"), KeyUri: "kbs:///a/b/c", ReadOnly: p.pick(2) == 1})
		}
		if p.pick(2) == 1 {
			// The policy's volume, its files in either order, or with a
			// reference or a mode the host changed.
			a := &agentv1.SealedFile{Path: "a", Value: p.str("sealed.x.y.z", "sealed.evil.y.z"), Mode: []uint32{0o400, 0o444}[p.pick(2)]}
			b := &agentv1.SealedFile{Path: "b/c", Value: "sealed.u.v.w", Mode: 0o644}
			files := []*agentv1.SealedFile{a, b}
			if p.pick(2) == 1 {
				files = []*agentv1.SealedFile{b, a}
			}
			r.SealedVolumes = append(r.SealedVolumes, &agentv1.SealedVolume{Name: p.str("creds", "other"), Files: files})
		}
		return r
	case "PullImage":
		return &agentv1.PullImageRequest{Image: p.str("reg/web:1", "reg/job:1", "evil")}
	case "PullProgress":
		return &agentv1.PullProgressRequest{Image: p.str("reg/web:1", "evil")}
	case "CreateContainer":
		s := &agentv1.ContainerSpec{Name: name, Image: p.str("reg/web:1", "reg/job:1", "evil"),
			Command: p.strs("/srv/web", "sh", "-c"), Args: p.strs("--port", "80", "echo done"), Env: env(),
			WorkingDir: p.str("", "/srv", "/"), RunAsNonRoot: p.pick(2) == 1, ReadOnlyRootFilesystem: p.pick(2) == 1,
			NoNewPrivileges: p.pick(2) == 1, SharePidNamespace: p.pick(3) == 0, SupplementalGroups: [][]int64{nil, {1000}, {1000, 2000}, {2000, 1000, 1000}}[p.pick(4)], Privileged: p.pick(5) == 0, CapabilitiesAdd: p.strs("CHOWN", "KILL", "SYS_ADMIN"),
			CapabilitiesDrop: p.strs("ALL", "KILL"), Stdin: p.pick(2) == 1, Tty: p.pick(2) == 1,
			SeccompProfile: []byte(seccompProfiles[p.pick(len(seccompProfiles))])}
		if p.pick(2) == 1 {
			s.HasRunAsUser, s.RunAsUser = true, int64(p.pick(2))*1000
		}
		for i := p.pick(3); i > 0; i-- {
			s.Mounts = append(s.Mounts, &agentv1.VolumeMount{Volume: p.str("cache", "data"), MountPath: p.str("/cache", "/data"), ReadOnly: p.pick(2) == 1})
		}
		if p.pick(2) == 1 {
			s.Resources = &agentv1.Resources{MemoryLimitBytes: 64 << 20, CpuLimitMillis: int64(p.pick(2)) * 500}
		}
		return &agentv1.CreateContainerRequest{Spec: s}
	case "ExecProcess":
		r := &agentv1.ExecProcessRequest{Container: name, Args: p.strs("/bin/check", "cat", "/tmp/<x>&", "sh"), Env: env(), WorkingDir: p.str("", "", "/tmp")}
		if p.pick(2) == 1 {
			r.Stdin = []byte("script")
		}
		r.Terminal, r.Detach, r.OpenStdin = p.pick(2) == 1, p.pick(2) == 1, p.pick(2) == 1
		return r
	case "SignalContainer":
		return &agentv1.SignalContainerRequest{Container: name, Signal: []int32{9, 15, 10}[p.pick(3)], All: p.pick(2) == 1, ExecId: p.str("", "e1")}
	case "ReadLogs":
		return &agentv1.ReadLogsRequest{Container: name, Offset: int64(p.pick(3)), ExecId: p.str("", "e1")}
	case "WaitContainer":
		return &agentv1.WaitContainerRequest{Container: name, ExecId: p.str("", "e1")}
	case "StartContainer":
		return &agentv1.StartContainerRequest{Container: name}
	case "RemoveContainer":
		return &agentv1.RemoveContainerRequest{Container: name, ExecId: p.str("", "e1")}
	case "WriteStdin":
		return &agentv1.WriteStdinRequest{Container: name, ExecId: p.str("", "e1"), Data: []byte(p.str("", "ls\n")), Close: p.pick(2) == 1}
	case "ResizeTerminal":
		return &agentv1.ResizeTerminalRequest{Container: name, ExecId: p.str("", "e1"), Width: uint32(p.pick(3)) * 80, Height: 24}
	case "Stats":
		return &agentv1.StatsRequest{Container: name}
	case "GetEvidence":
		return &agentv1.GetEvidenceRequest{RuntimeData: []byte(p.str("n", "m")), Binding: agentv1.EvidenceBinding(p.pick(2))}
	case "ListContainers":
		return &agentv1.ListContainersRequest{}
	case "Shutdown":
		return &agentv1.ShutdownRequest{}
	}
	return nil
}

type engines struct {
	native *policy.Evaluator
	rego   *Evaluator
}

func compile(t testing.TB) []engines {
	t.Helper()
	var out []engines
	for _, text := range testPolicies(t) {
		n, err := policy.NewEvaluator(context.Background(), text)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewEvaluator(context.Background(), text)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, engines{n, r})
	}
	return out
}

// same decides one request with both engines and fails on any difference
// of decision or reason.
func same(t *testing.T, e engines, method string, req any, st *policy.State) (bool, []string) {
	t.Helper()
	// The images as the agent pulled them: signed by a policy signer,
	// and (the second time) with no signature verified and other digests.
	var first []string
	firstOK := false
	for i, signer := range []string{"key sha256:0d2d", ""} {
		pulled := map[string]policy.PulledImage{}
		for ref, img := range e.native.Policy.Images {
			pulled[ref] = policy.PulledImage{Digest: img.Digest, ConfigDigest: img.ConfigDigest, Signer: signer}
			if i == 1 && img.Digest == "" {
				pulled[ref] = policy.PulledImage{Digest: "sha256:other", ConfigDigest: "sha256:other"}
			}
		}
		in, err := policy.Input(e.native.Policy, method, req, st, pulled, "shop")
		if err != nil {
			return false, nil // refused before any engine: the same for both
		}
		ok1, r1, err1 := e.native.Decide(context.Background(), method, in)
		ok2, r2, err2 := e.rego.Decide(context.Background(), method, in)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: errors native %v, rego %v", method, err1, err2)
		}
		if ok1 != ok2 || !reflect.DeepEqual(r1, r2) {
			t.Fatalf("%s %+v (state %v, signer %q):\n native: %v %q\n rego:   %v %q", method, req, st, signer, ok1, r1, ok2, r2)
		}
		if i == 0 {
			first, firstOK = r1, ok1
		}
	}
	return firstOK, first
}

func states(p *picker) *policy.State {
	st := &policy.State{Created: map[string]bool{}, Running: map[string]bool{}}
	for _, n := range []string{"web", "job"} {
		switch p.pick(3) {
		case 1:
			st.Created[n] = true
		case 2:
			st.Created[n], st.Running[n] = true, true
		}
	}
	return st
}

// TestNativeMatchesRego runs a spread of requests of every method through
// both engines; FuzzNativeMatchesRego explores further.
func TestNativeMatchesRego(t *testing.T) {
	es := compile(t)
	allowed, denied := 0, 0
	for seed := 0; seed < 3000; seed++ {
		b := []byte{byte(seed), byte(seed >> 8), byte(seed * 7), byte(seed * 13), byte(seed * 31), byte(seed * 61), byte(seed * 101), byte(seed * 151)}
		b = append(b, b...)
		b = append(b, b...)
		p := &picker{b: b}
		methods := policy.Rules()
		names := make([]string, 0, len(methods))
		for m := range methods {
			names = append(names, m)
		}
		sort.Strings(names)
		m := names[seed%len(names)]
		e := es[p.pick(len(es))]
		if ok, _ := same(t, e, m, p.request(m), states(p)); ok {
			allowed++
		} else {
			denied++
		}
	}
	if allowed < 100 || denied < 100 {
		t.Errorf("the spread is lopsided: %d allowed, %d denied", allowed, denied)
	}
}

func FuzzNativeMatchesRego(f *testing.F) {
	f.Add(uint8(0), []byte{0, 1, 2, 3})
	f.Add(uint8(3), []byte{1, 1, 1, 1, 1, 1, 1})
	f.Add(uint8(6), []byte{0, 0, 0, 0})
	es := compile(f)
	methods := agentv1.Methods()
	f.Fuzz(func(t *testing.T, m uint8, b []byte) {
		p := &picker{b: b}
		method := methods[int(m)%len(methods)]
		same(t, es[p.pick(len(es))], method, p.request(method), states(p))
	})
}

// BenchmarkEngines: the same decisions by the native engine (the agent's)
// and by OPA on the Rego specification, and the cost of compiling a policy.
func BenchmarkEngines(b *testing.B) {
	es := compile(b)[0]
	pulled := map[string]policy.PulledImage{}
	for ref, img := range es.native.Policy.Images {
		pulled[ref] = policy.PulledImage{Digest: img.Digest, ConfigDigest: img.ConfigDigest}
	}
	web := &agentv1.ContainerSpec{Name: "web", Image: "reg/web:1", Env: []*agentv1.EnvVar{{Name: "MODE", Value: "prod"}},
		CapabilitiesDrop: []string{"ALL"}, CapabilitiesAdd: []string{"CHOWN", "KILL"},
		Mounts:    []*agentv1.VolumeMount{{Volume: "cache", MountPath: "/cache"}, {Volume: "data", MountPath: "/data", ReadOnly: true}},
		Resources: &agentv1.Resources{MemoryLimitBytes: 64 << 20, CpuLimitMillis: 500}}
	st := &policy.State{Created: map[string]bool{}, Running: map[string]bool{}}
	in, err := policy.Input(es.native.Policy, "CreateContainer", &agentv1.CreateContainerRequest{Spec: web}, st, pulled, "shop")
	if err != nil {
		b.Fatal(err)
	}
	if ok, r, _ := es.native.Decide(context.Background(), "CreateContainer", in); !ok {
		b.Fatalf("the benchmark's request is denied: %v", r)
	}
	for name, d := range map[string]func(context.Context, string, map[string]any) (bool, []string, error){
		"native": es.native.Decide, "rego": es.rego.Decide,
	} {
		b.Run("CreateContainer/"+name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if ok, _, _ := d(context.Background(), "CreateContainer", in); !ok {
					b.Fatal("denied")
				}
			}
		})
	}
	text := testPolicies(b)[0]
	b.Run("compile/native", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			policy.NewEvaluator(context.Background(), text)
		}
	})
	b.Run("compile/rego", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			NewEvaluator(context.Background(), text)
		}
	})
}

// seccompProfiles are profiles a request may carry: none, two valid ones and
// an invalid one.
var seccompProfiles = []string{"",
	`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`,
	`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}`,
	`{"defaultAction":"SCMP_ACT_NOTIFY"}`,
}

func seccompDigest(t testing.TB, profile string) string {
	t.Helper()
	_, d, err := policy.SeccompProfile([]byte(profile))
	if err != nil {
		t.Fatal(err)
	}
	return d
}
