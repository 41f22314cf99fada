package layerdisk

import (
	"io"
	"os"

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
