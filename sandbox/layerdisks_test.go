package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/internal/testimage"
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

// TestLayoutBlobs: the blobs of an OCI layout's layers the guest has on
// disks are named (so they are not copied into it); other images, an
// image not as pinned, and no disks name none.
func TestLayoutBlobs(t *testing.T) {
	extra, err := testimage.Layer([]testimage.File{{Path: "/app", Data: []byte("app"), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Busybox(extra)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	if err := testimage.WriteLayout(dir, map[string]v1.Image{"app": img}); err != nil {
		t.Fatal(err)
	}
	ref := "oci:" + dir + ":app"
	ctx := context.Background()
	in, err := image.Inspect(ctx, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	pin := policy.Image{Digest: in.ManifestDigest, Layers: in.DiffIDs}
	second := in.Layers()[1].Digest
	want := []string{filepath.Join(dir, "blobs", second.Algorithm, second.Hex)}
	for _, tc := range []struct {
		name string
		ref  string
		pin  policy.Image
		in   *image.Inspection
		idx  []int
		want []string
	}{
		{"inspected here", ref, pin, nil, []int{1}, want},
		{"inspected before", ref, pin, in, []int{1}, want},
		{"no disks", ref, pin, nil, nil, nil},
		{"not the pinned image", ref, policy.Image{Digest: "sha256:" + strings.Repeat("0", 64), Layers: in.DiffIDs}, nil, []int{1}, nil},
		{"a registry image", "registry.example/app@" + in.ManifestDigest, pin, nil, []int{1}, nil},
		{"an index out of range", ref, pin, in, []int{7}, nil},
	} {
		if got := layoutBlobs(ctx, tc.ref, tc.pin, tc.in, tc.idx); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := os.Stat(want[0]); err != nil {
		t.Fatalf("the named blob is not the layout's file: %v", err)
	}
}
