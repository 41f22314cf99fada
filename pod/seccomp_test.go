package pod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeccompProfiles(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "profiles"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "profiles", "no-chmod.json"), []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := func(podSC, ctrSC string) []byte {
		return []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {" + podSC + "}\n  containers: [{name: a, image: busybox, securityContext: {" + ctrSC + "}}]\n")
	}
	for _, tc := range []struct {
		name, podSC, ctrSC string
		want, err          string
	}{
		{name: "none"},
		{name: "pod runtime default", podSC: "seccompProfile: {type: RuntimeDefault}", want: `"defaultAction":"SCMP_ACT_ERRNO"`},
		{name: "container overrides pod", podSC: "seccompProfile: {type: RuntimeDefault}", ctrSC: "seccompProfile: {type: Unconfined}"},
		{name: "localhost", ctrSC: "seccompProfile: {type: Localhost, localhostProfile: profiles/no-chmod.json}", want: `"names":["chmod"]`},
		{name: "localhost escape", ctrSC: "seccompProfile: {type: Localhost, localhostProfile: ../etc/passwd}", err: "without \"..\""},
		{name: "localhost missing", ctrSC: "seccompProfile: {type: Localhost, localhostProfile: nope.json}", err: "--seccomp-root"},
		{name: "localhost without file", ctrSC: "seccompProfile: {type: Localhost}", err: "needs localhostProfile"},
		{name: "unknown type", ctrSC: "seccompProfile: {type: Strict}", err: "use RuntimeDefault"},
	} {
		p, err := ParseWith(doc(tc.podSC, tc.ctrSC), Options{SeccompRoot: root})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := string(p.Main[0].Spec.GetSeccompProfile())
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: profile %.120s, want %q", tc.name, got, tc.want)
		}
	}
}
