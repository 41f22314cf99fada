package policy

import (
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	a := &Policy{Sandbox: Sandbox{Name: "p", Hostname: "p"}, Containers: map[string]*Container{"web": {Image: "img", Args: []string{"a"}}},
		Images: map[string]Image{"img": {Digest: "sha256:01"}}}
	b := &Policy{Sandbox: Sandbox{Name: "p", Hostname: "q"}, Containers: map[string]*Container{"web": {Image: "img", Args: []string{"b"}}},
		Images: map[string]Image{"img": {Digest: "sha256:01"}, "other": {Digest: "sha256:02"}}}
	if d := Diff(a, a); len(d) != 0 {
		t.Errorf("a policy differs from itself: %v", d)
	}
	d := Diff(a, b)
	for _, want := range []string{
		`containers.web.args: annotated ["a"], fresh ["b"]`,
		`sandbox.hostname: annotated "p", fresh "q"`,
		`images.other.digest: not in the annotated policy, fresh "sha256:02"`,
	} {
		if !slices.Contains(d, want) {
			t.Errorf("missing %q in %q", want, d)
		}
	}
	if !slices.IsSorted(d) {
		t.Errorf("not sorted: %v", d)
	}
}
