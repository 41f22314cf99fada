package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type entry struct {
	name, link string
	typ        byte
	data       string
	mode       int64
	pax        map[string]string
}

func tarOf(t testing.TB, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, PAXRecords: e.pax}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.data))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func TestUnpackRefusesEscapes(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("unpacking ownership and whiteouts needs root")
	}
	cases := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dotdot", []entry{{name: "../escape", data: "x"}}, `".."`},
		{"dotdot-inner", []entry{{name: "a/../../escape", data: "x"}}, `".."`},
		{"symlink-parent", []entry{{name: "evil", typ: tar.TypeSymlink, link: "/"}, {name: "evil/escape", data: "x"}}, "symlink"},
		{"symlink-relative-parent", []entry{{name: "evil", typ: tar.TypeSymlink, link: "../../.."}, {name: "evil/escape", data: "x"}}, "symlink"},
		{"symlink-deep", []entry{{name: "d/", typ: tar.TypeDir}, {name: "d/l", typ: tar.TypeSymlink, link: "/tmp"}, {name: "d/l/escape", data: "x"}}, "symlink"},
		{"hardlink-dotdot", []entry{{name: "h", typ: tar.TypeLink, link: "../outside"}}, "hard link"},
		{"hardlink-through-symlink", []entry{{name: "evil", typ: tar.TypeSymlink, link: "/"}, {name: "h", typ: tar.TypeLink, link: "evil/outside"}}, "symlink"},
		{"trusted-xattr", []entry{{name: "f", data: "x", pax: map[string]string{"SCHILY.xattr.trusted.overlay.redirect": "/x"}}}, "trusted.overlay.redirect"},
		{"whiteout-dotdot", []entry{{name: ".wh..."}}, "whiteout"},
		{"file-then-child", []entry{{name: "f", data: "x"}, {name: "f/child", data: "y"}}, "non-directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "root")
			os.Mkdir(root, 0o755)
			os.WriteFile(filepath.Join(base, "outside"), []byte("secret"), 0o600)
			_, err := Unpack(bytes.NewReader(tarOf(t, tc.entries)), root)
			if err == nil {
				t.Fatal("Unpack succeeded, want a refusal")
			}
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("error %v does not wrap ErrUnsafeEntry", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			for _, p := range []string{filepath.Join(base, "escape"), "/escape", "/tmp/escape"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written outside the layer", p)
				}
			}
			if b, _ := os.ReadFile(filepath.Join(base, "outside")); string(b) != "secret" {
				t.Errorf("file outside the layer changed")
			}
		})
	}
}

func TestUnpackContent(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("unpacking ownership and whiteouts needs root")
	}
	root := t.TempDir()
	_, err := Unpack(bytes.NewReader(tarOf(t, []entry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "/abs/file", data: "abs"}, // absolute names stay inside
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/tool", data: "#!", mode: 0o4755},
		{name: "bin/link", typ: tar.TypeSymlink, link: "/etc/passwd"},
		{name: "bin/hard", typ: tar.TypeLink, link: "bin/tool"},
		{name: "etc/.wh.gone"},
		{name: "opaque/.wh..wh..opq"},
		{name: "dup", data: "first"},
		{name: "dup", data: "second"},
	})), root)
	if err != nil {
		t.Fatal(err)
	}
	check := func(p, want string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", p, b, err, want)
		}
	}
	check("abs/file", "abs")
	check("dup", "second")
	check("bin/hard", "#!")
	if l, _ := os.Readlink(filepath.Join(root, "bin/link")); l != "/etc/passwd" {
		t.Errorf("symlink target %q", l)
	}
	st, _ := os.Stat(filepath.Join(root, "bin/tool"))
	if st.Mode()&os.ModeSetuid == 0 {
		t.Errorf("setuid bit lost: %v", st.Mode())
	}
	var s unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "etc/gone"), &s); err != nil || s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
		t.Errorf("whiteout not an overlay 0/0 char device: %v %o", err, s.Mode)
	}
	buf := make([]byte, 8)
	n, err := unix.Getxattr(filepath.Join(root, "opaque"), opaqueXattr, buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add(tarOf(f, []entry{{name: "a/b", data: "x"}, {name: "l", typ: tar.TypeSymlink, link: "/"}}))
	f.Add(tarOf(f, []entry{{name: "../x", data: "x"}}))
	f.Add(tarOf(f, []entry{{name: "d/", typ: tar.TypeDir}, {name: "d/.wh.f"}, {name: "d/.wh..wh..opq"}}))
	f.Add(tarOf(f, []entry{{name: "h", typ: tar.TypeLink, link: "a/b"}}))
	f.Add([]byte("not a tar"))
	if os.Getuid() != 0 {
		f.Skip("unpacking needs root")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		os.Mkdir(root, 0o755)
		_, _ = Unpack(bytes.NewReader(data), root)
		// Nothing may appear beside the root.
		ents, _ := os.ReadDir(base)
		if len(ents) != 1 {
			t.Fatalf("unpack wrote outside its root: %v", ents)
		}
	})
}
