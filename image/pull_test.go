package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"cocoon.dev/cocoon/internal/testimage"
)

func testImage(t testing.TB, n int) v1.Image {
	t.Helper()
	var layers []v1.Layer
	for i := 0; i < n; i++ {
		l, err := testimage.Layer([]testimage.File{{Path: "/data/f" + string(rune('a'+i)), Data: []byte(strings.Repeat("x", 1000*(i+1)))}})
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"/bin/true"}}, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func newPuller(t *testing.T) *Puller {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("unpacking needs root")
	}
	s, err := NewLayerStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Puller{Store: s}
}

func TestPullRegistry(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	img := testImage(t, 3)
	tagged, pinned, err := reg.Push("test/img:v1", img)
	if err != nil {
		t.Fatal(err)
	}
	p := newPuller(t)
	prog := &Progress{}
	got, err := p.Pull(context.Background(), pinned, prog)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if got.ManifestDigest != d.String() || len(got.LayerDirs) != 3 || got.CachedLayers != 0 {
		t.Fatalf("pulled %+v", got)
	}
	if b, err := os.ReadFile(filepath.Join(got.LayerDirs[1], "data/fb")); err != nil || len(b) != 2000 {
		t.Fatalf("layer content: %v %d", err, len(b))
	}
	if s := prog.Snapshot(); !s.Done || s.LayersDone != 3 || s.BytesDone != s.BytesTotal || s.BytesTotal == 0 {
		t.Errorf("progress %+v", s)
	}
	// Second pull by tag: every layer comes from the cache.
	again, err := p.Pull(context.Background(), tagged, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.CachedLayers != 3 {
		t.Errorf("cached layers = %d, want 3", again.CachedLayers)
	}
}

func TestPullRefusesTamperedLayer(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	img := testImage(t, 3)
	_, pinned, err := reg.Push("test/img:v1", img)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	bad, _ := layers[1].Digest()
	reg.Tamper(bad.String())
	p := newPuller(t)
	_, err = p.Pull(context.Background(), pinned, nil)
	if err == nil {
		t.Fatal("pull of a tampered layer succeeded")
	}
	if !strings.Contains(err.Error(), "layer 2/3") || !strings.Contains(err.Error(), bad.String()) {
		t.Errorf("error does not name the layer: %v", err)
	}
	diff, _ := layers[1].DiffID()
	if p.Store.Has(diff.String()) {
		t.Error("the tampered layer is in the store")
	}
	ents, _ := os.ReadDir(filepath.Join(p.Store.dir, "tmp"))
	if len(ents) != 0 {
		t.Errorf("temporary layer left behind: %v", ents)
	}
}

func TestPullRefusesTamperedConfigAndManifest(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	img := testImage(t, 1)
	_, pinned, _ := reg.Push("test/img:v1", img)
	cfg, _ := img.ConfigName()
	reg.Tamper(cfg.String())
	p := newPuller(t)
	if _, err := p.Pull(context.Background(), pinned, nil); err == nil {
		t.Fatal("pull with a tampered config succeeded")
	}
}

func TestPullWrongPinnedDigest(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	a, b := testImage(t, 1), testImage(t, 2)
	reg.Push("test/a:v1", a)
	_, pinnedB, _ := reg.Push("test/b:v1", b)
	db, _ := b.Digest()
	// a's repository does not have b's manifest.
	wrong := strings.Replace(pinnedB, "test/b", "test/a", 1)
	p := newPuller(t)
	_, err := p.Pull(context.Background(), wrong, nil)
	if err == nil {
		t.Fatal("pull with a wrong pinned digest succeeded")
	}
	if !strings.Contains(err.Error(), db.String()) {
		t.Errorf("error does not name the digest: %v", err)
	}
}

func TestPullMissing(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	p := newPuller(t)
	_, err := p.Pull(context.Background(), reg.Host()+"/nope:latest", nil)
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing image: %v", err)
	}
}

func TestPullLayoutAndArchive(t *testing.T) {
	img := testImage(t, 2)
	dir := t.TempDir()
	if err := testimage.WriteLayout(filepath.Join(dir, "layout"), map[string]v1.Image{"v1": img, "v2": testImage(t, 1)}); err != nil {
		t.Fatal(err)
	}
	p := newPuller(t)
	d, _ := img.Digest()
	for _, ref := range []string{"oci:" + dir + "/layout:v1", "oci:" + dir + "/layout@" + d.String()} {
		got, err := p.Pull(context.Background(), ref, nil)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if got.ManifestDigest != d.String() {
			t.Errorf("%s: digest %s", ref, got.ManifestDigest)
		}
	}
	if _, err := p.Pull(context.Background(), "oci:"+dir+"/layout", nil); err == nil || !strings.Contains(err.Error(), "v1, v2") {
		t.Errorf("ambiguous layout: %v", err)
	}
	if _, err := p.Pull(context.Background(), "oci:"+dir+"/layout:v3", nil); err == nil || !strings.Contains(err.Error(), `"v3"`) {
		t.Errorf("missing tag: %v", err)
	}
	// A layout blob changed on disk is refused.
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	blob := filepath.Join(dir, "layout", "blobs", "sha256", strings.TrimPrefix(ld.String(), "sha256:"))
	b, _ := os.ReadFile(blob)
	b[len(b)/2] ^= 1
	os.WriteFile(blob, b, 0o644)
	p2 := newPuller(t)
	if _, err := p2.Pull(context.Background(), "oci:"+dir+"/layout:v1", nil); !errors.Is(err, ErrDigestMismatch) && (err == nil || !strings.Contains(err.Error(), "layer 1/2")) {
		t.Errorf("tampered layout blob: %v", err)
	}
	// docker-archive
	tag, _ := name.NewTag("example.com/img:v1")
	arch := filepath.Join(dir, "img.tar")
	if err := tarball.WriteToFile(arch, tag, img); err != nil {
		t.Fatal(err)
	}
	got, err := p2.Pull(context.Background(), "docker-archive:"+arch, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.LayerDirs) != 2 {
		t.Errorf("archive layers %d", len(got.LayerDirs))
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in        string
		transport Transport
		path, tag string
		err       bool
	}{
		{in: "busybox", transport: Registry},
		{in: "127.0.0.1:5000/a/b:v1", transport: Registry},
		{in: "oci:/x/y:tag", transport: OCILayout, path: "/x/y", tag: "tag"},
		{in: "oci:/x:1/y", transport: OCILayout, path: "/x:1/y"},
		{in: "oci:/x@sha256:" + strings.Repeat("a", 64), transport: OCILayout, path: "/x"},
		{in: "oci:/x@sha256:bad", err: true},
		{in: "docker-archive:/a.tar", transport: DockerArchive, path: "/a.tar"},
		{in: "docker-archive:/a.tar@sha256:" + strings.Repeat("a", 64), err: true},
		{in: "oci:", err: true},
		{in: "UPPER/case", err: true},
		{in: "", err: true},
	} {
		r, err := ParseRef(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v", tc.in, err)
			continue
		}
		if err == nil && (r.Transport != tc.transport || r.Path != tc.path || r.Tag != tc.tag) {
			t.Errorf("%q: got %+v", tc.in, r)
		}
	}
}
