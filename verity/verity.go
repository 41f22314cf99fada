// Package verity builds dm-verity hash trees (the format veritysetup
// writes, superblock-less: the parameters travel apart) for images the
// host builds and a guest opens: the VM root file system and layer disks.
package verity

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"cocoon.dev/cocoon/guestinit"
)

// Append pads f (size bytes of data) to whole blocks and appends the
// hash tree. The levels are stored top first, as the kernel reads them.
func Append(f *os.File, size int64, salt []byte) (*guestinit.Verity, error) {
	if pad := (guestinit.VerityBlock - size%guestinit.VerityBlock) % guestinit.VerityBlock; pad > 0 {
		if _, err := f.WriteAt(make([]byte, pad), size); err != nil {
			return nil, err
		}
		size += pad
	}
	n := size / guestinit.VerityBlock
	if n == 0 {
		return nil, fmt.Errorf("verity: no data")
	}
	const perBlock = guestinit.VerityBlock / sha256.Size
	hashBlock := func(b []byte) []byte {
		h := sha256.New()
		h.Write(salt)
		h.Write(b)
		return h.Sum(nil)
	}
	// Level 0 hashes the data; each level above hashes the one below.
	var levels [][]byte
	cur := make([]byte, 0, n*sha256.Size)
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	blk := make([]byte, guestinit.VerityBlock)
	for i := int64(0); i < n; i++ {
		if _, err := io.ReadFull(r, blk); err != nil {
			return nil, err
		}
		cur = append(cur, hashBlock(blk)...)
	}
	for {
		// Pad the level to whole hash blocks.
		if rem := len(cur) % guestinit.VerityBlock; rem != 0 {
			cur = append(cur, make([]byte, guestinit.VerityBlock-rem)...)
		}
		levels = append(levels, cur)
		if len(cur) == guestinit.VerityBlock && (len(levels) > 1 || n <= perBlock) {
			break
		}
		next := make([]byte, 0, len(cur)/perBlock+sha256.Size)
		for i := 0; i < len(cur); i += guestinit.VerityBlock {
			next = append(next, hashBlock(cur[i:i+guestinit.VerityBlock])...)
		}
		cur = next
	}
	v := &guestinit.Verity{Salt: hex.EncodeToString(salt), DataBlocks: n, HashStart: n}
	if n == 1 {
		// No tree: the root hash is the data block's.
		levels = nil
		v.RootHash = hex.EncodeToString(hashBlock(blk))
		return v, nil
	}
	v.RootHash = hex.EncodeToString(hashBlock(levels[len(levels)-1]))
	off := size
	for i := len(levels) - 1; i >= 0; i-- {
		if _, err := f.WriteAt(levels[i], off); err != nil {
			return nil, err
		}
		off += int64(len(levels[i]))
	}
	return v, nil
}
