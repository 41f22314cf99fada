package guest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dmIoctl runs one device-mapper ioctl on /dev/mapper/control with a
// payload after the header (a target spec and its parameters).
func dmIoctl(ctl *os.File, cmd uintptr, name string, flags uint32, targets int, payload []byte) (*unix.DmIoctl, error) {
	buf := make([]byte, unix.SizeofDmIoctl+len(payload)+8)
	h := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	h.Version = [3]uint32{4, 0, 0}
	h.Data_size = uint32(len(buf))
	h.Data_start = unix.SizeofDmIoctl
	h.Target_count = uint32(targets)
	h.Flags = flags
	copy(h.Name[:len(h.Name)-1], name)
	copy(buf[unix.SizeofDmIoctl:], payload)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return nil, e
	}
	out := *h
	return &out, nil
}

// dmTarget is one table line: a dm_target_spec followed by its
// parameters, padded to 8 bytes.
func dmTarget(sectors uint64, typ, params string) []byte {
	n := unix.SizeofDmTargetSpec + len(params) + 1
	n = (n + 7) &^ 7
	b := make([]byte, n)
	s := (*unix.DmTargetSpec)(unsafe.Pointer(&b[0]))
	s.Length = sectors
	s.Next = uint32(n)
	copy(s.Target_type[:], typ)
	copy(b[unix.SizeofDmTargetSpec:], params)
	return b
}

// OpenVerity creates the read-only dm-verity device name over dev (data
// and hash tree on the same device) and returns its /dev/dm-N path.
func OpenVerity(name, dev string, v *Verity) (string, error) {
	ctl, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("device-mapper: %w (is dm_mod loaded?)", err)
	}
	defer ctl.Close()
	if _, err := dmIoctl(ctl, unix.DM_DEV_CREATE, name, 0, 0, nil); err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	params := v.Table(dev)
	params = params[len("verity "):]
	sectors := uint64(v.DataBlocks) * VerityBlock / 512
	if _, err := dmIoctl(ctl, unix.DM_TABLE_LOAD, name, unix.DM_READONLY_FLAG, 1, dmTarget(sectors, "verity", params)); err != nil {
		return "", fmt.Errorf("load the verity table of %s: %w", name, err)
	}
	h, err := dmIoctl(ctl, unix.DM_DEV_SUSPEND, name, 0, 0, nil) // no suspend flag: resume
	if err != nil {
		return "", fmt.Errorf("activate %s: %w (a root hash that does not match fails here or on first read)", name, err)
	}
	minor := unix.Minor(h.Dev)
	path := "/dev/dm-" + strconv.FormatUint(uint64(minor), 10)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	return "", fmt.Errorf("%s did not appear", path)
}
