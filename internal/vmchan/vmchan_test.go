package vmchan

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pair(t *testing.T) (*Host, *Guest) {
	t.Helper()
	a, b := net.Pipe()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := NewHost(a, log)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGuest(b, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); g.Close() })
	return h, g
}

func TestStreamsAndReady(t *testing.T) {
	h, g := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Host -> guest: the agent API.
	go func() {
		c, err := g.Listener().Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
	c, err := h.Open()
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()
	// Guest -> host: tagged services.
	go func() {
		c, err := h.Service(TagEgress).Accept()
		if err == nil {
			io.WriteString(c, "egress")
			c.Close()
		}
	}()
	e, err := g.Dial(ctx, TagEgress)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(e); string(b) != "egress" {
		t.Errorf("egress stream got %q", b)
	}
	if err := g.Ready(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if m, err := h.WaitReady(ctx); err != nil || m != "ready" {
		t.Errorf("ready: %q %v", m, err)
	}
}

func TestFetchTree(t *testing.T) {
	h, g := pair(t)
	src := t.TempDir()
	layout := filepath.Join(src, "layout")
	os.MkdirAll(filepath.Join(layout, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(layout, "index.json"), []byte(`{"schemaVersion":2}`), 0o644)
	os.WriteFile(filepath.Join(layout, "blobs", "sha256", "ab"), []byte("blob"), 0o644)
	diskLayer := filepath.Join(layout, "blobs", "sha256", "cd") // a layer the guest has on a disk
	os.WriteFile(diskLayer, []byte("layer on a disk"), 0o644)
	os.Symlink("/etc/shadow", filepath.Join(layout, "link")) // not sent
	archive := filepath.Join(src, "img.tar")
	os.WriteFile(archive, []byte("docker archive"), 0o644)
	secret := filepath.Join(src, "secret")
	os.WriteFile(secret, []byte("host secret"), 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go ServeFiles(h.Service(TagFile), func(p string) bool { return p == layout || p == archive }, func(p string) bool { return p == diskLayer }, log)

	// The guest's copy goes to the same path; here, a path in a fresh
	// directory stands for the guest's filesystem.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dst := t.TempDir()
	fetch := func(p string) error {
		// FetchTree writes to the path it names; serve the same tree under
		// the guest directory by asking for the host path and moving.
		return g.fetchTo(ctx, p, filepath.Join(dst, filepath.Base(p)))
	}
	if err := fetch(layout); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "layout", "blobs", "sha256", "ab")); string(b) != "blob" {
		t.Errorf("blob: %q", b)
	}
	if _, err := os.Stat(filepath.Join(dst, "layout", "blobs", "sha256", "cd")); !os.IsNotExist(err) {
		t.Errorf("a skipped blob was sent: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "layout", "link")); !os.IsNotExist(err) {
		t.Errorf("a symlink was copied: %v", err)
	}
	if err := fetch(archive); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "img.tar")); string(b) != "docker archive" {
		t.Errorf("archive: %q", b)
	}
	err := fetch(secret)
	if err == nil || !strings.Contains(err.Error(), "not a local image source of this pod") {
		t.Errorf("a file the pod does not name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "secret")); !os.IsNotExist(err) {
		t.Error("something was written for a refused path")
	}
}

func tarOf(t testing.TB, hs ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		h := h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && h.Size < 1<<20 {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close() // fails after a header whose data was left out
	return buf.Bytes()
}

func TestExtractRefusesEscapes(t *testing.T) {
	for name, hs := range map[string][]tar.Header{
		"dotdot":   {{Typeflag: tar.TypeReg, Name: "../evil", Size: 1}},
		"absolute": {{Typeflag: tar.TypeDir, Name: "./"}, {Typeflag: tar.TypeReg, Name: "a/../../evil", Size: 1}},
		"symlink":  {{Typeflag: tar.TypeDir, Name: "./"}, {Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/"}},
		"hardlink": {{Typeflag: tar.TypeDir, Name: "./"}, {Typeflag: tar.TypeLink, Name: "l", Linkname: "../x"}},
		"device":   {{Typeflag: tar.TypeDir, Name: "./"}, {Typeflag: tar.TypeChar, Name: "c"}},
		"twice":    {{Typeflag: tar.TypeDir, Name: "./"}, {Typeflag: tar.TypeReg, Name: "f", Size: 1}, {Typeflag: tar.TypeReg, Name: "f", Size: 1}},
		"empty":    {},
		"huge":     {{Typeflag: tar.TypeDir, Name: "./"}, {Typeflag: tar.TypeReg, Name: "f", Size: MaxTree + 1}},
	} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			dest := filepath.Join(d, "out", "tree")
			if err := extract(bytes.NewReader(tarOf(t, hs...)), dest, MaxTree); err == nil {
				t.Error("accepted")
			}
			if _, err := os.Stat(filepath.Join(d, "out", "evil")); err == nil {
				t.Error("wrote outside the destination")
			}
		})
	}
}

// FuzzExtract: whatever the host sends, nothing is written outside the
// destination and nothing panics.
func FuzzExtract(f *testing.F) {
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeDir, Name: "./"}, tar.Header{Typeflag: tar.TypeReg, Name: "blobs/a", Size: 3}))
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeReg, Name: "../x", Size: 1}))
	f.Add(tarOf(f, tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc"}))
	f.Add([]byte("not a tar"))
	base := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := os.MkdirTemp(base, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(d)
		dest := filepath.Join(d, "in", "tree")
		_ = extract(bytes.NewReader(b), dest, 1<<20)
		ents, _ := os.ReadDir(d)
		if len(ents) != 1 || ents[0].Name() != "in" {
			t.Fatalf("wrote %v next to the destination", ents)
		}
		ents, _ = os.ReadDir(filepath.Join(d, "in"))
		for _, e := range ents {
			if e.Name() != "tree" {
				t.Fatalf("wrote %s next to the destination", e.Name())
			}
		}
	})
}

func TestDiskSerial(t *testing.T) {
	s := DiskSerial("/var/lib/vol.img")
	if len(s) > 20 || s != DiskSerial("/var/lib/vol.img") || s == DiskSerial("/var/lib/vol2.img") {
		t.Errorf("serial %q", s)
	}
}
