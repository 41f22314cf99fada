package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

const (
	seccompA = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"},{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`
	// seccompA with its rules in the other order.
	seccompAReordered = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"},{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}`
	seccompB          = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`
)

func TestSeccompProfile(t *testing.T) {
	_, a, err := SeccompProfile([]byte(seccompA))
	if err != nil {
		t.Fatal(err)
	}
	p, a2, err := SeccompProfile([]byte(seccompAReordered))
	if err != nil {
		t.Fatal(err)
	}
	if a != a2 || !strings.HasPrefix(a, "sha256:") {
		t.Errorf("the same rules in another order: %s and %s", a, a2)
	}
	if p.Syscalls[0].Names[0] != "chmod" {
		t.Errorf("canonical form not applied: %v", p.Syscalls)
	}
	if _, b, _ := SeccompProfile([]byte(seccompB)); b == a {
		t.Error("different rules, same digest")
	}
	for name, tc := range map[string]struct{ in, want string }{
		"unknown field":  {`{"defaultAction":"SCMP_ACT_ALLOW","extra":1}`, "unknown field"},
		"no default":     {`{"syscalls":[]}`, "no defaultAction"},
		"notify default": {`{"defaultAction":"SCMP_ACT_NOTIFY"}`, "listener"},
		"notify rule":    {`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}`, "listener"},
		"listener path":  {`{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/l.sock"}`, "listener"},
		"trailing data":  {`{"defaultAction":"SCMP_ACT_ALLOW"} {}`, "after the JSON"},
		"not json":       {`SCMP_ACT_ALLOW`, "seccomp profile"},
		"too large":      {`{"defaultAction":"SCMP_ACT_ALLOW","architectures":["` + strings.Repeat("x", MaxSeccompBytes) + `"]}`, "at most"},
	} {
		if _, _, err := SeccompProfile([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

// FuzzSeccompProfile: any bytes give a canonical profile or an error, never
// a panic, and the canonical form is a fixed point.
func FuzzSeccompProfile(f *testing.F) {
	for _, s := range []string{seccompA, seccompAReordered, seccompB, `{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, d, err := SeccompProfile(b)
		if err != nil {
			return
		}
		canon, err := jsonMarshal(p)
		if err != nil {
			t.Fatal(err)
		}
		_, d2, err := SeccompProfile(canon)
		if err != nil || d2 != d {
			t.Fatalf("canonical form %s: %v, digest %s then %s", canon, err, d, d2)
		}
	})
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
