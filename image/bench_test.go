package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
)

// BenchmarkUnpack extracts a layer of 1,000 files of 8 KiB in 50 directories.
func BenchmarkUnpack(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root")
	}
	var es []entry
	data := string(bytes.Repeat([]byte("cocoon!\n"), 1024))
	for d := 0; d < 50; d++ {
		es = append(es, entry{name: fmt.Sprintf("d%d/", d), typ: tar.TypeDir, mode: 0o755})
		for f := 0; f < 20; f++ {
			es = append(es, entry{name: fmt.Sprintf("d%d/f%d", d, f), data: data})
		}
	}
	tb := tarOf(b, es)
	b.SetBytes(int64(len(tb)))
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(b.TempDir(), "l")
		os.Mkdir(dir, 0o755)
		if _, err := Unpack(bytes.NewReader(tb), dir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPullLayout pulls a 4-layer image from an OCI layout into an empty
// store (verify + decompress + extract, layers in parallel).
func BenchmarkPullLayout(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root")
	}
	var layers []v1.Layer
	for i := 0; i < 4; i++ {
		var fs []testimage.File
		for f := 0; f < 200; f++ {
			fs = append(fs, testimage.File{Path: fmt.Sprintf("/l%d/f%d", i, f), Data: bytes.Repeat([]byte{byte(f)}, 16<<10)})
		}
		l, err := testimage.Layer(fs)
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"x"}}, layers...)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := testimage.WriteLayout(filepath.Join(dir, "layout"), map[string]v1.Image{"t": img}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4 * 200 * 16 << 10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, _ := NewLayerStore(filepath.Join(dir, fmt.Sprint("s", i)))
		if _, err := (&Puller{Store: s}).Pull(context.Background(), "oci:"+dir+"/layout:t", nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(filepath.Join(dir, fmt.Sprint("s", i)))
		b.StartTimer()
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"busybox", "oci:/a:b", "oci:/a@sha256:" + fmt.Sprintf("%064d", 0), "docker-archive:/x.tar:t", "127.0.0.1:5000/a/b@sha256:" + fmt.Sprintf("%064d", 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.Digest != "" && !digestRE.MatchString(r.Digest) {
			t.Fatalf("accepted malformed digest %q", r.Digest)
		}
	})
}
