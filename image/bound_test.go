package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/internal/testimage"
)

// zeroTar is a tar holding one file of n zero bytes.
func zeroTar(t *testing.T, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: n}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(chunk)) {
		if left < int64(len(chunk)) {
			chunk = chunk[:left]
		}
		tw.Write(chunk)
	}
	tw.Close()
	return buf.Bytes()
}

// TestExpansionBounded plays the decompression bomb: a zstd layer of a few
// KB that expands to 64 MiB is cut off at the bound, before its digest is
// compared; nothing of it stays in the store or its staging area, and the
// staging area never held more than the bound.
func TestExpansionBounded(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("unpacking needs root")
	}
	plain := zeroTar(t, 64<<20)
	enc, _ := zstd.NewWriter(nil)
	bomb := enc.EncodeAll(plain, nil)
	if len(bomb) > 64<<10 {
		t.Fatalf("the bomb is %d bytes; want a small one", len(bomb))
	}
	t.Logf("a %d-byte zstd layer that expands to %d bytes", len(bomb), len(plain))
	sum := sha256.Sum256(plain)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	s, err := NewLayerStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ur, closeZ, err := decompress(bufio.NewReader(bytes.NewReader(bomb)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeZ()
	const limit = 1 << 20
	watch := &peakReader{r: ur, dir: filepath.Join(s.dir, "tmp")}
	_, err = s.Put(diffID, watch, nil, limit)
	if !errors.Is(err, ErrLayerTooLarge) || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Fatalf("Put: %v, want ErrLayerTooLarge", err)
	}
	if watch.read > limit+2<<20 {
		t.Errorf("read %d bytes of the bomb; the bound is %d", watch.read, limit)
	}
	if watch.peak > limit+1<<20 {
		t.Errorf("the staging area grew to %d bytes; the bound is %d", watch.peak, limit)
	}
	if s.Has(diffID) {
		t.Error("the layer is in the store")
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dir, "tmp")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
	// The same layer within its bound is stored (the bound is not an
	// off-by-one: a layer of exactly the bound passes).
	ur2, closeZ2, _ := decompress(bufio.NewReader(bytes.NewReader(bomb)))
	defer closeZ2()
	if _, err := s.Put(diffID, ur2, nil, int64(len(plain))); err != nil {
		t.Fatalf("a layer of exactly its bound: %v", err)
	}
}

// peakReader reads through and samples how much the staging directory
// holds.
type peakReader struct {
	r          interface{ Read([]byte) (int, error) }
	dir        string
	read, peak int64
	calls      int
}

func (p *peakReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	if p.calls++; p.calls%16 == 0 {
		if u := duBytes(p.dir); u > p.peak {
			p.peak = u
		}
	}
	return n, err
}

func duBytes(dir string) int64 {
	var total int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	return total
}

// TestPinnedLayerSize: a layer larger than the size the policy pins is cut
// off at that size.
func TestPinnedLayerSize(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	img := testImage(t, 2)
	_, pinned, err := reg.Push("test/size:v1", img)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	d0, _ := layers[0].DiffID()
	p := newPuller(t)
	p.LayerSize = func(diffID string) (int64, bool) { return 512, diffID == d0.String() }
	_, err = p.Pull(context.Background(), pinned, nil)
	if !errors.Is(err, ErrLayerTooLarge) || !strings.Contains(err.Error(), "layer 1/2") {
		t.Fatalf("pull: %v, want layer 1/2 refused as too large", err)
	}
	if p.Store.Has(d0.String()) {
		t.Error("the oversized layer is in the store")
	}
}

// TestDirTimesStayInTheLayer plays the deferred-times escape: a layer makes
// d/x, then replaces d with a symlink to a directory outside; the times
// deferred for d/x must not land on the outside directory's x.
func TestDirTimesStayInTheLayer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("unpacking ownership needs root")
	}
	base := t.TempDir()
	root, victim := filepath.Join(base, "root"), filepath.Join(base, "victim")
	os.Mkdir(root, 0o755)
	os.MkdirAll(filepath.Join(victim, "x"), 0o755)
	before := time.Unix(1600000000, 0)
	os.Chtimes(filepath.Join(victim, "x"), before, before)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	evil := time.Unix(1000000000, 0)
	for _, h := range []*tar.Header{
		{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: evil},
		{Name: "d/x/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: evil},
		{Name: "d", Typeflag: tar.TypeSymlink, Linkname: victim, ModTime: evil},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	if _, err := Unpack(bytes.NewReader(buf.Bytes()), root); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(victim, "x"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mtim.Sec != before.Unix() {
		t.Errorf("a layer changed the mtime of %s outside the layer (%d, was %d)", filepath.Join(victim, "x"), st.Mtim.Sec, before.Unix())
	}
	if fi, err := os.Lstat(filepath.Join(root, "d")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the layer's own d: %v %v", fi, err)
	}
}

// TestDeferredOpsOnlyAfterVerification: directory times, the deferred
// operation, are not applied while the layer is being checked (the verify
// step still sees the directory as extraction left it) and are applied once
// it passed; a layer whose digest does not match is discarded with none of
// its deferred operations run.
func TestDeferredOpsOnlyAfterVerification(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("unpacking needs root")
	}
	s, err := NewLayerStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1234567890, 0)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	tw.WriteHeader(&tar.Header{Name: "dir/f", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1, ModTime: mt})
	tw.Write([]byte("x"))
	tw.Close()
	layer := buf.Bytes()
	sum := sha256.Sum256(layer)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	dirMtime := func(pattern string) int64 {
		t.Helper()
		m, _ := filepath.Glob(pattern)
		if len(m) != 1 {
			t.Fatalf("%s: %v", pattern, m)
		}
		var st unix.Stat_t
		if err := unix.Lstat(m[0], &st); err != nil {
			t.Fatal(err)
		}
		return st.Mtim.Sec
	}
	verified := false
	_, err = s.Put(diffID, bytes.NewReader(layer), func() error {
		verified = true
		if got := dirMtime(filepath.Join(s.dir, "tmp", "*", "fs", "dir")); got == mt.Unix() {
			t.Error("directory times were applied before the layer was verified")
		}
		return nil
	}, 0)
	if err != nil || !verified {
		t.Fatalf("Put: %v (verified %v)", err, verified)
	}
	if got := dirMtime(filepath.Join(s.Path(diffID), "dir")); got != mt.Unix() {
		t.Errorf("directory time after commit: %d, want %d", got, mt.Unix())
	}
	// A mismatching layer: never verified, nothing left.
	verified = false
	_, err = s.Put("sha256:"+strings.Repeat("0", 64), bytes.NewReader(layer), func() error { verified = true; return nil }, 0)
	if !errors.Is(err, ErrDigestMismatch) || verified {
		t.Fatalf("Put of a mismatching layer: %v (verify ran: %v)", err, verified)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dir, "tmp")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
}
