package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const userConfig = `version = 3
# the node's own settings, kept as they are
root = '/var/lib/containerd'

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
`

func handler(iso string) Handler {
	return Handler{Name: "cocoon", ShimPath: "/usr/local/bin/containerd-shim-cocoon-v2",
		Options: [][2]string{{"root", "/var/lib/cocoon"}, {"isolation", iso}}}
}

func TestApply(t *testing.T) {
	out, v, err := Apply([]byte(userConfig), handler("process"))
	if err != nil || v != 3 {
		t.Fatalf("apply: %v (version %d)", err, v)
	}
	if !strings.HasPrefix(string(out), userConfig) {
		t.Error("the user's configuration was not kept as it was")
	}
	for _, want := range []string{"runtime_type = 'io.containerd.cocoon.v2'", "pod_annotations = ['cocoon.dev/*']", "isolation = 'process'"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	again, _, err := Apply(out, handler("process"))
	if err != nil || string(again) != string(out) {
		t.Errorf("not idempotent: %v\n%s", err, again)
	}
	upd, _, err := Apply(out, handler("qemu"))
	if err != nil || !strings.Contains(string(upd), "isolation = 'qemu'") || strings.Contains(string(upd), "isolation = 'process'") || strings.Count(string(upd), "BEGIN cocoon") != 1 {
		t.Errorf("update: %v\n%s", err, upd)
	}
	if !declares(upd, "cocoon") || !declares(upd, "runc") {
		t.Error("the result does not declare both runtimes")
	}
	empty, v, err := Apply(nil, handler("process"))
	if err != nil || v != 3 || !strings.HasPrefix(string(empty), "version = 3\n") {
		t.Errorf("empty configuration: %v\n%s", err, empty)
	}
}

func TestApplyRefuses(t *testing.T) {
	byHand := userConfig + "  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cocoon]\n    runtime_type = 'x'\n"
	out, _, _ := Apply([]byte(userConfig), handler("process"))
	broken := strings.Replace(string(out), `# END cocoon runtime handler "cocoon"`, "", 1)
	for name, tc := range map[string]struct {
		text string
		h    Handler
		want string
	}{
		"declared by hand": {byHand, handler("process"), "outside cocoon's block"},
		"containerd 1.x":   {"version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n", handler("process"), "containerd 1.x"},
		"no version":       {"root = '/x'\n", handler("process"), "containerd 1.x"},
		"broken block":     {broken, handler("process"), "not its end"},
		"bad name":         {userConfig, Handler{Name: "a]b", ShimPath: "/x"}, "handler name"},
		"invalid toml":     {"version = 3\n[plugins\n", handler("process"), "not valid TOML"},
	} {
		_, _, err := Apply([]byte(tc.text), tc.h)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func TestContainerdFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(userConfig), 0o640); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	res, err := Containerd(path, handler("process"), now)
	if err != nil || !res.Changed || res.Backup == "" {
		t.Fatalf("install: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(res.Backup); string(b) != userConfig {
		t.Error("the backup is not the original")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the original 0640", st.Mode().Perm())
	}
	res, err = Containerd(path, handler("process"), now.Add(time.Hour))
	if err != nil || res.Changed || res.Backup != "" {
		t.Errorf("second install changed something: %+v %v", res, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("files: %d, want the configuration and one backup", len(ents))
	}
	// containerd itself reads the result, where it is built.
	bin := filepath.Join(os.Getenv("COCOON_TOOLS"), "bin", "containerd")
	if os.Getenv("COCOON_TOOLS") == "" {
		bin = "/var/tmp/cocoon-tools/bin/containerd"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Logf("containerd not built here (%v): its own parse of the result is checked by the CRI e2e tests", err)
		return
	}
	out, err := exec.Command(bin, "--config", path, "config", "dump").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "io.containerd.cocoon.v2") {
		t.Errorf("containerd config dump: %v\n%s", err, out)
	}
}
