package layerdisk

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type entry struct {
	h    tar.Header
	data []byte
}

func layerTar(t *testing.T, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := e.h
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if h.Format == tar.FormatUnknown && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if len(e.data) > 0 {
			tw.Write(e.data)
		}
	}
	tw.Close()
	return buf.Bytes()
}

var when = time.Unix(1700000000, 0)

// testLayer covers every kind of entry a layer holds.
func testLayer(t *testing.T) []byte {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*blockSize/16+100) // 3 blocks and a tail
	var many []entry
	for i := 0; i < 300; i++ { // more than one directory header, several metadata blocks
		many = append(many, entry{h: tar.Header{Name: "many/f" + strings.Repeat("x", i%40) + string(rune('a'+i%26)) + itoa(i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: when}, data: []byte(itoa(i))})
	}
	return layerTar(t, append([]entry{
		{h: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: when}},
		{h: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: when}, data: []byte("root:x:0:0::/root:/bin/sh\n")},
		{h: tar.Header{Name: "bin/big", Typeflag: tar.TypeReg, Mode: 0o755, Uid: 1000, Gid: 2000, ModTime: when}, data: big},
		{h: tar.Header{Name: "bin/empty", Typeflag: tar.TypeReg, Mode: 0o600, ModTime: when}},
		{h: tar.Header{Name: "bin/link", Typeflag: tar.TypeSymlink, Linkname: "big", ModTime: when}},
		{h: tar.Header{Name: "bin/hard", Typeflag: tar.TypeLink, Linkname: "bin/big", ModTime: when}},
		{h: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: when}},
		{h: tar.Header{Name: "dev/fifo", Typeflag: tar.TypeFifo, Mode: 0o644, ModTime: when}},
		{h: tar.Header{Name: "var/old/.wh..wh..opq", Typeflag: tar.TypeReg, ModTime: when}},
		{h: tar.Header{Name: "var/.wh.gone", Typeflag: tar.TypeReg, ModTime: when}},
		{h: tar.Header{Name: "x/attr", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: when, PAXRecords: map[string]string{"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}}, data: []byte("x")},
		{h: tar.Header{Name: "deep/a/b/c/d/e", Typeflag: tar.TypeReg, Mode: 0o4755, ModTime: when}, data: []byte("suid")},
	}, many...))
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(i)) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func build(t *testing.T, layer []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "layer.sqfs")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, err := Build(bytes.NewReader(layer), f)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stat(); st.Size() != size || size%4096 != 0 {
		t.Fatalf("image is %d bytes, Build says %d", st.Size(), size)
	}
	return p
}

// TestReproducible: the same layer gives the same bytes.
func TestReproducible(t *testing.T) {
	l := testLayer(t)
	a, _ := os.ReadFile(build(t, l))
	b, _ := os.ReadFile(build(t, l))
	if sha256.Sum256(a) != sha256.Sum256(b) {
		t.Fatal("two builds of one layer differ")
	}
}

// TestUnsquashfs: squashfs-tools lists what the layer holds.
func TestUnsquashfs(t *testing.T) {
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("unsquashfs missing: scripts/deps.sh --test installs squashfs-tools")
		}
		t.Skip("needs unsquashfs")
	}
	out, err := exec.Command("unsquashfs", "-lln", "-n", build(t, testLayer(t))).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	for _, want := range []string{
		"-rwxr-xr-x 1000/2000           " + itoa(3*blockSize+1600) + " 2023-11-14 22:13 squashfs-root/bin/big",
		"lrwxrwxrwx 0/0                        3 2023-11-14 22:13 squashfs-root/bin/link -> big",
		"crw-rw-rw- 0/0                      1,  3 2023-11-14 22:13 squashfs-root/dev/null",
		"-rwsr-xr-x 0/0                        4 2023-11-14 22:13 squashfs-root/deep/a/b/c/d/e",
	} {
		norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
		if !strings.Contains(norm(string(out)), norm(want)) {
			t.Errorf("unsquashfs -lln lacks %q:\n%s", want, out)
		}
	}
}

// TestMount: the kernel mounts the image; files, links, devices,
// whiteouts, opaque directories and extended attributes read back.
func TestMount(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("mounting needs root")
	}
	img := build(t, testLayer(t))
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "squashfs", "-o", "loop,ro", img, dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount: %v: %s", err, out)
		}
		t.Skipf("mount squashfs: %v: %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	b, err := os.ReadFile(filepath.Join(dir, "bin/big"))
	if err != nil || len(b) != 3*blockSize+1600 || !bytes.HasPrefix(b, []byte("0123456789abcdef")) {
		t.Fatalf("bin/big: %d bytes, %v", len(b), err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/passwd")); string(b) != "root:x:0:0::/root:/bin/sh\n" {
		t.Fatalf("etc/passwd: %q", b)
	}
	var st, st2 unix.Stat_t
	unix.Lstat(filepath.Join(dir, "bin/big"), &st)
	unix.Lstat(filepath.Join(dir, "bin/hard"), &st2)
	if st.Ino != st2.Ino || st.Nlink != 2 || st.Uid != 1000 || st.Gid != 2000 || st.Mtim.Sec != when.Unix() {
		t.Fatalf("bin/big %+v, bin/hard ino %d", st, st2.Ino)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/link")); l != "big" {
		t.Fatalf("bin/link -> %q", l)
	}
	unix.Lstat(filepath.Join(dir, "dev/null"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Fatalf("dev/null: mode %o rdev %d", st.Mode, st.Rdev)
	}
	unix.Lstat(filepath.Join(dir, "var/gone"), &st)
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("the whiteout var/gone: mode %o rdev %d", st.Mode, st.Rdev)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "var/old"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Fatalf("var/old opaque: %q %v", buf[:n], err)
	}
	if n, err := unix.Lgetxattr(filepath.Join(dir, "x/attr"), "user.note", buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("x/attr user.note: %q %v", buf[:n], err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "many"))
	if err != nil || len(ents) != 300 {
		t.Fatalf("many: %d entries, %v", len(ents), err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "many", e.Name()))
		if err != nil || !strings.HasSuffix(e.Name(), string(b)) {
			t.Fatalf("many/%s: %q %v", e.Name(), b, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "deep/a/b/c/d/e")); err != nil || st.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("deep file: %v %v", st, err)
	}
}
