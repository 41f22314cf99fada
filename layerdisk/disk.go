package layerdisk

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/verity"
)

// Info is a layer disk: its layer, and the dm-verity parameters that open
// it (the data is the squashfs image; the hash tree follows it).
type Info struct {
	DiffID string           `json:"diff_id"`
	Verity guestinit.Verity `json:"verity"`
}

// Salt is the verity salt of a layer's disk (guestinit.LayerDiskSalt).
func Salt(diffID string) []byte { return guestinit.LayerDiskSalt(diffID) }

// Make builds the layer disk of an uncompressed layer tar into f (an empty
// file): the squashfs image, then its hash tree.
func Make(layer io.Reader, diffID string, f *os.File) (*Info, error) {
	size, err := Build(layer, f)
	if err != nil {
		return nil, err
	}
	v, err := verity.Append(f, size, Salt(diffID))
	if err != nil {
		return nil, err
	}
	return &Info{DiffID: diffID, Verity: *v}, nil
}

var diffIDRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Cache keeps layer disks by diff_id in a directory shared by every
// sandbox of the node: DIR/sha256/<hex>.disk and its .json. The host
// trusts it for nothing but speed: a guest opens a disk only against the
// root hash its policy pins.
type Cache struct{ Dir string }

func (c Cache) paths(diffID string) (disk, meta string, err error) {
	if !diffIDRE.MatchString(diffID) {
		return "", "", fmt.Errorf("layer disk: %q is not a sha256 diff_id", diffID)
	}
	base := filepath.Join(c.Dir, "sha256", strings.TrimPrefix(diffID, "sha256:"))
	return base + ".disk", base + ".json", nil
}

// Get returns the disk of a layer, building it from the layer's
// uncompressed tar (open) when the cache lacks it. Builds go to a
// temporary file renamed into place, so a crash leaves no half disk.
func (c Cache) Get(diffID string, open func() (io.ReadCloser, error)) (string, *Info, error) {
	disk, meta, err := c.paths(diffID)
	if err != nil {
		return "", nil, err
	}
	if b, err := os.ReadFile(meta); err == nil {
		var in Info
		if json.Unmarshal(b, &in) == nil && in.DiffID == diffID {
			if _, err := os.Stat(disk); err == nil {
				return disk, &in, nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(disk), 0o755); err != nil {
		return "", nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(disk), ".build-*")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	r, err := open()
	if err != nil {
		return "", nil, err
	}
	defer r.Close()
	in, err := Make(r, diffID, f)
	if err != nil {
		return "", nil, fmt.Errorf("layer disk of %s: %w", diffID, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return "", nil, err
	}
	if err := f.Sync(); err != nil {
		return "", nil, err
	}
	if err := os.Rename(f.Name(), disk); err != nil {
		return "", nil, err
	}
	b, err := json.Marshal(in)
	if err != nil {
		return "", nil, err
	}
	// Its own temporary name: two sandboxes may build one layer at once.
	mf, err := os.CreateTemp(filepath.Dir(meta), ".meta-*")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(mf.Name())
	if _, err := mf.Write(b); err != nil {
		mf.Close()
		return "", nil, err
	}
	if err := mf.Chmod(0o644); err != nil {
		mf.Close()
		return "", nil, err
	}
	if err := mf.Close(); err != nil {
		return "", nil, err
	}
	return disk, in, os.Rename(mf.Name(), meta)
}
