package layerdisk

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cocoon.dev/cocoon/guestinit"
)

func veritysetupVerify(t *testing.T, disk string, in *Info) error {
	t.Helper()
	v := in.Verity
	out, err := exec.Command("veritysetup", "verify", disk, disk, v.RootHash, "--no-superblock",
		fmt.Sprintf("--hash-offset=%d", v.HashStart*guestinit.VerityBlock), fmt.Sprintf("--data-blocks=%d", v.DataBlocks),
		"--salt="+v.Salt).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// TestDiskVerifies: the disk's tree verifies with veritysetup against the
// root hash Make returns; one flipped byte of the data, or of the tree,
// does not; and the same layer gives the same root hash again.
func TestDiskVerifies(t *testing.T) {
	if _, err := exec.LookPath("veritysetup"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("veritysetup (cryptsetup-bin) missing")
		}
		t.Skip("needs veritysetup")
	}
	layer := testLayer(t)
	diffID := "sha256:" + strings.Repeat("ab", 32)
	dir := t.TempDir()
	make1 := func(name string) (string, *Info) {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		in, err := Make(bytes.NewReader(layer), diffID, f)
		if err != nil {
			t.Fatal(err)
		}
		return p, in
	}
	disk, in := make1("a")
	if err := veritysetupVerify(t, disk, in); err != nil {
		t.Fatalf("veritysetup refuses the disk: %v", err)
	}
	if _, again := make1("b"); again.Verity != in.Verity {
		t.Fatalf("root hash differs between builds: %+v %+v", in.Verity, again.Verity)
	}
	if in.Verity.Salt == fmt.Sprintf("%x", Salt("sha256:"+strings.Repeat("cd", 32))) {
		t.Fatal("the salt does not depend on the layer")
	}
	for _, at := range []int64{200, in.Verity.HashStart*guestinit.VerityBlock + 10} {
		b, _ := os.ReadFile(disk)
		b[at] ^= 1
		bad := filepath.Join(dir, fmt.Sprintf("bad%d", at))
		os.WriteFile(bad, b, 0o644)
		if err := veritysetupVerify(t, bad, in); err == nil {
			t.Fatalf("a disk with byte %d flipped verifies", at)
		}
	}
}

// TestCache: a layer's disk is built once and found again by diff_id.
func TestCache(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	layer := testLayer(t)
	diffID := "sha256:" + strings.Repeat("ef", 32)
	opens := 0
	open := func() (io.ReadCloser, error) { opens++; return io.NopCloser(bytes.NewReader(layer)), nil }
	p1, in1, err := c.Get(diffID, open)
	if err != nil {
		t.Fatal(err)
	}
	p2, in2, err := c.Get(diffID, open)
	if err != nil || p1 != p2 || in1.Verity != in2.Verity || opens != 1 {
		t.Fatalf("second Get: %v %v, %d builds", p2, err, opens)
	}
	if st, _ := os.Stat(p1); st.Mode().Perm() != 0o444 {
		t.Fatalf("disk mode %v", st.Mode())
	}
	if _, _, err := c.Get("sha256:../../etc", open); err == nil {
		t.Fatal("a malformed diff_id was taken")
	}
	if ents, _ := os.ReadDir(filepath.Join(c.Dir, "sha256")); len(ents) != 2 {
		t.Fatalf("cache holds %d files, want the disk and its record", len(ents))
	}
}

// TestCacheConcurrent: sandboxes starting together build one layer's disk
// at once; each gets a whole disk and its record.
func TestCacheConcurrent(t *testing.T) {
	c := Cache{Dir: t.TempDir()}
	layer := testLayer(t)
	diffID := "sha256:" + strings.Repeat("12", 32)
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil }
	errs := make(chan error, 4)
	roots := make(chan string, 4)
	for i := 0; i < 4; i++ {
		go func() {
			_, in, err := c.Get(diffID, open)
			if err == nil {
				roots <- in.Verity.RootHash
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(roots)
	first := ""
	for r := range roots {
		if first != "" && r != first {
			t.Fatalf("root hashes differ: %s %s", first, r)
		}
		first = r
	}
	if _, in, err := c.Get(diffID, func() (io.ReadCloser, error) { t.Fatal("built again"); return nil, nil }); err != nil || in.Verity.RootHash != first {
		t.Fatalf("the cached record: %v %v", in, err)
	}
}
