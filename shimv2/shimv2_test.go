package shimv2

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/resolve"
)

func TestKubeletVolume(t *testing.T) {
	for _, tc := range []struct {
		src, want string
		ok        bool
	}{
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache", "cache", true},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache/", "cache", true},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/tls", "tls", true},
		{"/var/lib/kubelet/pods/u1/kubernetes.io~secret/tls", "", false},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/secret-data/mount", "secret-data", true},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/secret-data", "", false},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~configmap/cfg", "", false},
		{"/etc/passwd", "", false},
		{"/kubernetes.io~empty-dir/x", "", false},
		{"/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/../../../../../etc", "", false},
	} {
		got, ok := kubeletVolume(tc.src)
		if got != tc.want || ok != tc.ok {
			t.Errorf("kubeletVolume(%q) = %q, %v; want %q, %v", tc.src, got, ok, tc.want, tc.ok)
		}
	}
}

func criSpec() *specs.Spec {
	lim := int64(64 << 20)
	quota, period := int64(50000), uint64(100000)
	return &specs.Spec{
		Annotations: map[string]string{annContainerType: typeContainer, annContainerName: "web", annImageName: "reg/app@sha256:aa"},
		Process: &specs.Process{
			Args: []string{"/app", "--port", "80"}, Env: []string{"PATH=/bin", "HOSTNAME=web", "A=b=c"}, Cwd: "/srv",
			User:         specs.User{UID: 1000, GID: 1000},
			Capabilities: &specs.LinuxCapabilities{Bounding: append(slices.DeleteFunc(resolve.DefaultCaps(), func(c string) bool { return c == "CAP_NET_RAW" }), "CAP_NET_ADMIN")},
		},
		Root: &specs.Root{Path: "rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/x/hosts"},
			{Destination: "/dev/termination-log", Type: "bind", Source: "/var/lib/kubelet/pods/u/containers/web/abc"},
			{Destination: "/cache", Type: "bind", Source: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/cache", Options: []string{"rbind", "ro"}},
		},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim}, CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}},
	}
}

func TestContainerSpec(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("# from the CRI\nnameserver 10.96.0.10\nsearch ns.svc.cluster.local cluster.local\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := criSpec()
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: rc})
	c, err := containerSpec(s, &policy.Container{RunAsUser: -1, RunAsGroup: -1})
	if err != nil {
		t.Fatal(err)
	}
	if d := c.GetDns(); !slices.Equal(d.GetServers(), []string{"10.96.0.10"}) || len(d.GetSearches()) != 2 || !slices.Equal(d.GetOptions(), []string{"ndots:5"}) {
		t.Errorf("dns = %v", d)
	}
	if c.GetName() != "web" || c.GetImage() != "reg/app@sha256:aa" {
		t.Errorf("name/image = %q %q", c.GetName(), c.GetImage())
	}
	if !slices.Equal(c.GetCommand(), []string{"/app", "--port", "80"}) || len(c.GetArgs()) != 0 {
		t.Errorf("command %q args %q: want the resolved line as command", c.GetCommand(), c.GetArgs())
	}
	if len(c.GetEnv()) != 3 || c.GetEnv()[2].GetName() != "A" || c.GetEnv()[2].GetValue() != "b=c" {
		t.Errorf("env = %v", c.GetEnv())
	}
	if c.GetHasRunAsUser() || c.GetHasRunAsGroup() {
		t.Error("user passed although the policy takes the image's")
	}
	if !slices.Equal(c.GetCapabilitiesAdd(), []string{"CAP_NET_ADMIN"}) || !slices.Equal(c.GetCapabilitiesDrop(), []string{"CAP_NET_RAW"}) {
		t.Errorf("caps add %v drop %v", c.GetCapabilitiesAdd(), c.GetCapabilitiesDrop())
	}
	if got, _ := resolve.Caps(c.GetCapabilitiesAdd(), c.GetCapabilitiesDrop()); len(got) != len(resolve.DefaultCaps()) {
		t.Errorf("caps resolve to %v", got)
	}
	if !c.GetReadOnlyRootFilesystem() || c.GetWorkingDir() != "/srv" {
		t.Error("read-only root or working dir lost")
	}
	if c.GetTty() {
		t.Error("tty without a terminal in the spec")
	}
	s.Process.Terminal = true
	if c, err := containerSpec(s, &policy.Container{RunAsUser: -1, RunAsGroup: -1}); err != nil || !c.GetTty() {
		t.Errorf("a terminal in the spec: tty %v, %v", c.GetTty(), err)
	}
	if c.GetResources().GetMemoryLimitBytes() != 64<<20 || c.GetResources().GetCpuLimitMillis() != 500 {
		t.Errorf("resources = %v", c.GetResources())
	}
	if len(c.GetMounts()) != 1 || c.GetMounts()[0].GetVolume() != "cache" || c.GetMounts()[0].GetMountPath() != "/cache" || !c.GetMounts()[0].GetReadOnly() {
		t.Errorf("mounts = %v", c.GetMounts())
	}
	c, err = containerSpec(criSpec(), &policy.Container{RunAsUser: 1000, RunAsGroup: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !c.GetHasRunAsUser() || c.GetRunAsUser() != 1000 || !c.GetHasRunAsGroup() {
		t.Error("user not passed although the policy pins one")
	}
}

func TestContainerSpecRefusals(t *testing.T) {
	for name, mut := range map[string]func(*specs.Spec){
		"host path": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/srv/data"})
		},
		"configmap": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/cfg", Type: "bind", Source: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg"})
		},
		"tmpfs mount": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "tmpfs", Source: "/v/volumes/kubernetes.io~empty-dir/x"})
		},
		"no process": func(s *specs.Spec) { s.Process.Args = nil },
		"no image":   func(s *specs.Spec) { delete(s.Annotations, annImageName) },
		"no name":    func(s *specs.Spec) { delete(s.Annotations, annContainerName) },
	} {
		s := criSpec()
		mut(s)
		if _, err := containerSpec(s, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseOptions(t *testing.T) {
	mk := func(body string) *runtimeoptions.Options { return &runtimeoptions.Options{ConfigBody: []byte(body)} }
	for _, tc := range []struct {
		body, want, err string
	}{
		{"isolation = 'qemu'\nroot = '/r'\nagent = '/a'", "qemu /r /a", ""},
		{"", "process /var/lib/cocoon ", ""},
		{"isolaton = 'qemu'", "", "isolaton"},
		{"isolation = [", "", "options"},
	} {
		a, err := typeurl.MarshalAnyToProto(mk(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		o, err := ParseOptions(a)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one naming %q", tc.body, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.body, err)
		}
		got := o.Isolation + " " + o.Root + " " + o.Agent
		if tc.body == "" {
			got = o.Isolation + " " + o.Root + " "
		}
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.body, got, tc.want)
		}
	}
	if _, err := ParseOptions(nil); err != nil {
		t.Errorf("no options: %v", err)
	}
	big := mk("root = '" + strings.Repeat("x", maxOptionsBytes) + "'")
	a, _ := typeurl.MarshalAnyToProto(big)
	if _, err := ParseOptions(a); err == nil {
		t.Error("oversized options accepted")
	}
}

func TestPodFromPolicy(t *testing.T) {
	pol := &policy.Policy{
		Sandbox:    policy.Sandbox{Name: "web", Hostname: "web", Volumes: []policy.Volume{{Name: "cache", SizeLimitBytes: 1 << 20}}, EncryptedVolumes: []policy.EncryptedVolume{{Name: "data", Source: "/d.img", Key: "kbs:///a/b/c"}}},
		Containers: map[string]*policy.Container{"web": {Image: "img"}},
		Images:     map[string]policy.Image{"img": {Digest: "sha256:aa"}},
	}
	text, err := policy.Render(pol)
	if err != nil {
		t.Fatal(err)
	}
	ann := base64.StdEncoding.EncodeToString(text)
	p, got, err := podFromPolicy(ann)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "web" || len(p.Volumes) != 1 || p.Volumes[0].GetSizeLimitBytes() != 1<<20 || len(p.Encrypted) != 1 || p.Encrypted[0].GetKeyUri() != "kbs:///a/b/c" {
		t.Errorf("pod = %+v", p)
	}
	if got.Containers["web"] == nil || p.Annotations["cocoon.dev/policy"] != ann {
		t.Error("policy or annotation lost")
	}
	for name, a := range map[string]string{"missing": "", "not base64": "%%%", "not a policy": base64.StdEncoding.EncodeToString([]byte("package x"))} {
		if _, _, err := podFromPolicy(a); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name == "missing" && !strings.Contains(err.Error(), "pod_annotations") {
			t.Errorf("missing policy: %v does not say how to pass it", err)
		}
	}
}

func TestMirrorFor(t *testing.T) {
	dir := t.TempDir()
	write := func(host, body string) {
		if err := os.MkdirAll(filepath.Join(dir, host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, host, "hosts.toml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("registry.k8s.io", "server = \"https://registry.k8s.io\"\n[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
	write("gcr.io", "server = \"http://127.0.0.1:5001\"\n")
	write("push.only", "[host.\"https://m.example\"]\n  capabilities = [\"push\"]\n")
	write("bad.example", "server = [")
	for _, tc := range []struct{ ref, want string }{
		{"registry.k8s.io/pause:3.9", "127.0.0.1:5000"},
		{"gcr.io/x/y:1", "127.0.0.1:5001"},
		{"push.only/a:1", ""},
		{"docker.io/library/busybox", ""},
		{"oci:/tmp/layout", ""},
	} {
		got, err := mirrorFor(dir, tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("mirrorFor(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := mirrorFor(dir, "bad.example/a:1"); err == nil {
		t.Error("a broken hosts.toml was accepted")
	}
	if got, _ := mirrorFor("", "registry.k8s.io/pause:3.9"); got != "" {
		t.Errorf("no configuration: %q", got)
	}
}

func TestDNSLabel(t *testing.T) {
	for _, in := range []string{"web", "PodSandbox-with-log-directory-cc0d4c59-2cda-4f2d-a505-9db3a8a13f6e", "a_b", "-x-", strings.Repeat("z", 80), "Ünïcode", "", "---"} {
		got := dnsLabel(in)
		if !dnsLabelRE.MatchString(got) {
			t.Errorf("dnsLabel(%q) = %q: not a DNS label", in, got)
		}
		if dnsLabelRE.MatchString(in) && got != in {
			t.Errorf("dnsLabel(%q) = %q: a label must stay itself", in, got)
		}
	}
	if dnsLabel("A") == dnsLabel("a-") {
		t.Error("different names collide")
	}
}
