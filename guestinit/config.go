package guestinit

import "fmt"

// Config is /etc/cocoon/guest.json inside the initramfs: what the guest's
// init does before it starts the agent.
type Config struct {
	// Modules are initramfs paths of kernel modules, in load order.
	Modules []string `json:"modules"`
	// Rootfs is the root filesystem's dm-verity description; the disk
	// whose virtio serial number is RootfsSerial holds data and tree.
	Rootfs       *Verity `json:"rootfs"`
	RootfsSerial string  `json:"rootfs_serial"`
}

// RootfsSerial is the virtio-blk serial number of the root filesystem disk.
const RootfsSerial = "cocoon-rootfs"

// ConfigPath is where the guest config lives in the initramfs.
const ConfigPath = "etc/cocoon/guest.json"

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
