package guestinit

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// LayerDiskFormat names the layer disks' layout (package layerdisk): it
// is part of every disk's salt, so a layout change changes every root
// hash.
const LayerDiskFormat = "cocoon-layer-disk-v1"

// LayerDiskSalt is the dm-verity salt of a layer's disk: fixed by the
// format and the layer, so the root hash is the same wherever the disk is
// built.
func LayerDiskSalt(diffID string) []byte {
	s := sha256.Sum256([]byte(LayerDiskFormat + "\x00" + diffID))
	return s[:]
}

// LayerDiskSerial is the virtio-blk serial number (at most 20 bytes) of a
// layer's disk: "cl" and the first 18 hex digits of its diff_id. The
// serial only finds the disk: dm-verity and the policy's root hash decide
// what it holds.
func LayerDiskSerial(diffID string) string {
	h := strings.TrimPrefix(diffID, "sha256:")
	if len(h) > 18 {
		h = h[:18]
	}
	return "cl" + h
}

// LayerDiskVerity is the verity description of a layer disk the policy
// pins: its data and tree on one device, the salt the layer's.
func LayerDiskVerity(diffID, rootHash string, dataBlocks int64) *Verity {
	return &Verity{RootHash: rootHash, Salt: hex.EncodeToString(LayerDiskSalt(diffID)), DataBlocks: dataBlocks, HashStart: dataBlocks}
}
