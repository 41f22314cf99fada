package guest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// VerityBlock is the data and hash block size of the guest's dm-verity
// root filesystem.
const VerityBlock = 4096

// Verity describes a dm-verity hash tree appended to its data (format 1,
// sha256, no superblock), as `veritysetup format --no-superblock` makes it.
type Verity struct {
	RootHash   string `json:"root_hash"`
	Salt       string `json:"salt"`
	DataBlocks int64  `json:"data_blocks"`
	// HashStart is the first hash block, in VerityBlock units from the
	// start of the device (right after the data).
	HashStart int64 `json:"hash_start"`
}

// Params are the dm-verity target's parameters for a device that holds
// both the data and the tree.
func (v *Verity) Params(dev string) string {
	return fmt.Sprintf("1 %s %s %d %d %d %d sha256 %s %s",
		dev, dev, VerityBlock, VerityBlock, v.DataBlocks, v.HashStart, v.RootHash, v.Salt)
}

// appendVerity pads f (size bytes of data) to whole blocks and appends the
// hash tree. The levels are stored top first, as the kernel reads them.
func appendVerity(f *os.File, size int64, salt []byte) (*Verity, error) {
	if pad := (VerityBlock - size%VerityBlock) % VerityBlock; pad > 0 {
		if _, err := f.WriteAt(make([]byte, pad), size); err != nil {
			return nil, err
		}
		size += pad
	}
	n := size / VerityBlock
	if n == 0 {
		return nil, fmt.Errorf("verity: no data")
	}
	const perBlock = VerityBlock / sha256.Size
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
	blk := make([]byte, VerityBlock)
	for i := int64(0); i < n; i++ {
		if _, err := io.ReadFull(r, blk); err != nil {
			return nil, err
		}
		cur = append(cur, hashBlock(blk)...)
	}
	for {
		// Pad the level to whole hash blocks.
		if rem := len(cur) % VerityBlock; rem != 0 {
			cur = append(cur, make([]byte, VerityBlock-rem)...)
		}
		levels = append(levels, cur)
		if len(cur) == VerityBlock && (len(levels) > 1 || n <= perBlock) {
			break
		}
		next := make([]byte, 0, len(cur)/perBlock+sha256.Size)
		for i := 0; i < len(cur); i += VerityBlock {
			next = append(next, hashBlock(cur[i:i+VerityBlock])...)
		}
		cur = next
	}
	v := &Verity{Salt: hex.EncodeToString(salt), DataBlocks: n, HashStart: n}
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
