package layerdisk

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzBuild feeds arbitrary bytes as a layer tar: the builder refuses or
// builds, never panics, and what it builds is no larger than the input's
// data plus its metadata.
func FuzzBuild(f *testing.F) {
	var small bytes.Buffer
	tw := tar.NewWriter(&small)
	tw.WriteHeader(&tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("abc"))
	tw.WriteHeader(&tar.Header{Name: "a/.wh.c", Typeflag: tar.TypeReg})
	tw.WriteHeader(&tar.Header{Name: "a/l", Typeflag: tar.TypeLink, Linkname: "a/b"})
	tw.WriteHeader(&tar.Header{Name: "../x", Typeflag: tar.TypeSymlink, Linkname: "/etc"})
	tw.Close()
	f.Add(small.Bytes())
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := os.Create(filepath.Join(dir, "img"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		size, err := Build(bytes.NewReader(b), out)
		if err != nil {
			return
		}
		if size > int64(len(b))*4+1<<20 {
			t.Fatalf("%d bytes of tar built %d bytes of image", len(b), size)
		}
	})
}
