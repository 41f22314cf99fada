package sandbox

import (
	"slices"
	"testing"

	"cocoon.dev/cocoon/policy"
)

// TestDiskImages: a pod spec's images when it names some (cocoon run);
// the policy's, sorted, when it names none (a CRI sandbox).
func TestDiskImages(t *testing.T) {
	pol := &policy.Policy{Images: map[string]policy.Image{"reg/b:1": {}, "reg/a:1": {}, "reg/c:1": {}}}
	for _, tc := range []struct {
		name string
		pod  []string
		want []string
	}{
		{"the pod's images", []string{"reg/c:1"}, []string{"reg/c:1"}},
		{"a CRI sandbox", nil, []string{"reg/a:1", "reg/b:1", "reg/c:1"}},
	} {
		if got := diskImages(tc.pod, pol); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := diskImages(nil, &policy.Policy{}); len(got) != 0 {
		t.Errorf("no images pinned: %v", got)
	}
}
