package sandbox

import (
	"strings"
	"testing"
)

func TestCPUVirtualization(t *testing.T) {
	const head = "processor\t: 0\nvendor_id\t: GenuineIntel\n"
	for name, tc := range map[string]struct {
		cpuinfo string
		want    string // "" for usable, else a substring of the error
	}{
		"intel vt-x":         {head + "flags\t\t: fpu vme de pse vmx ept\n", ""},
		"amd-v":              {head + "flags\t\t: fpu svm npt\nbugs\t\t:\n", ""},
		"pvm host, no vmx":   {head + "flags\t\t: fpu vme hypervisor avx512f\n", "paravirtual KVM"},
		"vmx only in a name": {head + "model name\t: vmx svm\nflags\t\t: fpu\n", "no hardware virtualization"},
		"no flags line":      {head, "no CPU flags"},
		"empty":              {"", "no CPU flags"},
	} {
		t.Run(name, func(t *testing.T) {
			err := cpuVirtualization([]byte(tc.cpuinfo))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want usable, got %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}
