package volume

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func needUserspace(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (FUSE, loop devices, mount)")
	}
	for _, b := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing", b)
			}
			t.Skipf("needs %s", b)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// TestCreateOpenUserspace: a volume made from a directory opens through the
// userspace path; a file written through the mount is on the image only
// encrypted; a read-only open refuses writes.
func TestCreateOpenUserspace(t *testing.T) {
	needUserspace(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "hello.txt"), []byte("hello from inside the volume\n"), 0o644)
	img := filepath.Join(dir, "vol.img")
	pass := []byte("volume key file bytes")
	if err := Create(context.Background(), img, CreateOptions{Size: 16 << 20, Passphrase: pass, KDF: "pbkdf2", FromDir: src}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(img)
	if bytes.Contains(raw, []byte("hello from inside")) {
		t.Fatal("the image holds plaintext")
	}
	dev, _, err := Open(img, pass, false)
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	u, err := OpenUserspace(dev, filepath.Join(dir, "fuse"), mnt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "hello.txt"))
	if err != nil || string(b) != "hello from inside the volume\n" {
		t.Errorf("file from --from: %q %v", b, err)
	}
	marker := "MARKER-" + strings.Repeat("x", 40)
	if err := os.WriteFile(filepath.Join(mnt, "new.txt"), []byte(marker), 0o644); err != nil {
		t.Fatal(err)
	}
	exec.Command("sync").Run()
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(img)
	if bytes.Contains(raw, []byte("MARKER-")) {
		t.Fatal("a file written through the mount reached the image in plaintext")
	}
	// Read-only: the file is there; writes are refused.
	dev, _, err = Open(img, pass, true)
	if err != nil {
		t.Fatal(err)
	}
	u, err = OpenUserspace(dev, filepath.Join(dir, "fuse"), mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if b, err := os.ReadFile(filepath.Join(mnt, "new.txt")); err != nil || string(b) != marker {
		t.Errorf("written file after reopen: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "other.txt"), []byte("x"), 0o644); err == nil {
		t.Error("a read-only volume accepted a write")
	}
}
