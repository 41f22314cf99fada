package verity

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cocoon.dev/cocoon/guestinit"
)

// TestVerityMatchesVeritysetup compares the tree and root hash with
// cryptsetup's veritysetup for sizes around each level boundary.
func TestVerityMatchesVeritysetup(t *testing.T) {
	if _, err := exec.LookPath("veritysetup"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("veritysetup (cryptsetup-bin) missing")
		}
		t.Skip("needs veritysetup (cryptsetup-bin)")
	}
	salt := bytes.Repeat([]byte{0x5a}, 32)
	for _, blocks := range []int64{2, 127, 128, 129, 300, 128*128 + 5} {
		d := t.TempDir()
		data := make([]byte, blocks*guestinit.VerityBlock-100) // not block aligned
		rand.Read(data)
		mine := filepath.Join(d, "mine")
		os.WriteFile(mine, data, 0o644)
		f, _ := os.OpenFile(mine, os.O_RDWR, 0)
		v, err := Append(f, int64(len(data)), salt)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ref := filepath.Join(d, "data")
		padded := append(data, make([]byte, 100)...)
		os.WriteFile(ref, padded, 0o644)
		out, err := exec.Command("veritysetup", "format", "--no-superblock", "--salt", hex.EncodeToString(salt),
			"--data-block-size=4096", "--hash-block-size=4096", ref, filepath.Join(d, "hash")).CombinedOutput()
		if err != nil {
			t.Fatalf("veritysetup: %v %s", err, out)
		}
		if !strings.Contains(string(out), v.RootHash) {
			t.Errorf("%d blocks: root %s, veritysetup says\n%s", blocks, v.RootHash, out)
		}
		got, _ := os.ReadFile(mine)
		want, _ := os.ReadFile(filepath.Join(d, "hash"))
		if v.DataBlocks != blocks || v.HashStart != blocks || !bytes.Equal(got[blocks*guestinit.VerityBlock:], want) {
			t.Errorf("%d blocks: tree differs (%d bytes, veritysetup %d)", blocks, len(got)-int(blocks*guestinit.VerityBlock), len(want))
		}
	}
}
