// Package dm creates and removes device-mapper devices with the kernel's
// ioctls (no dmsetup or cryptsetup binary): the VM guest uses it for its
// dm-verity root filesystem and for dm-crypt volumes.
package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Target is one line of a device-mapper table, in 512-byte sectors.
type Target struct {
	Start, Length uint64
	Type          string
	// Params may hold key material (dm-crypt): Create clears its copy.
	Params string
}

// Available reports whether the kernel has device-mapper and the target
// type (its module loaded, or built in): the targets the kernel lists
// (DM_LIST_VERSIONS, as `dmsetup targets`), or a loaded module when the
// list cannot be had.
func Available(target string) bool {
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		return false
	}
	if ts, err := Targets(); err == nil {
		for _, t := range ts {
			if t == target {
				return true
			}
		}
		return false
	}
	_, err := os.Stat("/sys/module/dm_" + target)
	return err == nil
}

// Targets lists the device-mapper target types the kernel has now.
func Targets() ([]string, error) {
	ctl, err := control()
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	for size := 16 << 10; size <= 1<<20; size *= 4 {
		buf := make([]byte, size)
		h := header(buf)
		if err := call(ctl, unix.DM_LIST_VERSIONS, buf); err != nil {
			return nil, fmt.Errorf("device-mapper: list targets: %w", err)
		}
		if h.Flags&unix.DM_BUFFER_FULL_FLAG != 0 {
			continue
		}
		return parseTargets(buf[min(int(h.Data_start), len(buf)):min(int(h.Data_size), len(buf))]), nil
	}
	return nil, errors.New("device-mapper: the target list does not fit in 1 MiB")
}

// parseTargets reads struct dm_target_versions entries: next (offset of
// the next entry from this one, 0 for the last), version[3], name (NUL
// terminated).
func parseTargets(b []byte) []string {
	var names []string
	for off := 0; off+16 < len(b); {
		next := int(binary.NativeEndian.Uint32(b[off:]))
		name := b[off+16:]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		names = append(names, string(name))
		if next <= 0 {
			break
		}
		off += next
	}
	return names
}

func control() (*os.File, error) {
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("device-mapper: %w (is dm_mod loaded?)", err)
	}
	return f, nil
}

// header sets up the struct dm_ioctl at the start of buf, its data area
// the rest of buf.
func header(buf []byte) *unix.DmIoctl {
	h := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	h.Version = [3]uint32{4, 0, 0}
	h.Data_size = uint32(len(buf))
	h.Data_start = unix.SizeofDmIoctl
	return h
}

// call runs the device-mapper ioctl cmd on buf (a header and its data).
func call(ctl *os.File, cmd uintptr, buf []byte) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), cmd, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return e
	}
	return nil
}

// ioctl runs one device-mapper ioctl with payload after the header; the
// buffer (which may hold a key) is cleared afterwards.
func ioctl(ctl *os.File, cmd uintptr, name string, flags uint32, targets int, payload []byte) (*unix.DmIoctl, error) {
	buf := make([]byte, unix.SizeofDmIoctl+len(payload)+8)
	defer clear(buf)
	h := header(buf)
	h.Target_count = uint32(targets)
	h.Flags = flags
	if len(name) >= len(h.Name) {
		return nil, fmt.Errorf("device-mapper name %q is too long", name)
	}
	copy(h.Name[:], name)
	copy(buf[unix.SizeofDmIoctl:], payload)
	if err := call(ctl, cmd, buf); err != nil {
		return nil, err
	}
	out := *h
	return &out, nil
}

// Create makes the device name with table, activates it and returns its
// /dev/dm-N path. On failure nothing is left behind.
func Create(name string, table []Target, readOnly bool) (string, error) {
	ctl, err := control()
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	if _, err := ioctl(ctl, unix.DM_DEV_CREATE, name, 0, 0, nil); err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	var payload []byte
	for _, t := range table {
		n := (unix.SizeofDmTargetSpec + len(t.Params) + 1 + 7) &^ 7
		b := make([]byte, n)
		s := (*unix.DmTargetSpec)(unsafe.Pointer(&b[0]))
		s.Sector_start, s.Length, s.Next = t.Start, t.Length, uint32(n)
		copy(s.Target_type[:len(s.Target_type)-1], t.Type)
		copy(b[unix.SizeofDmTargetSpec:], t.Params)
		payload = append(payload, b...)
		clear(b)
	}
	defer clear(payload)
	var flags uint32
	if readOnly {
		flags = unix.DM_READONLY_FLAG
	}
	if _, err := ioctl(ctl, unix.DM_TABLE_LOAD, name, flags, len(table), payload); err != nil {
		_, _ = ioctl(ctl, unix.DM_DEV_REMOVE, name, 0, 0, nil)
		return "", fmt.Errorf("load the table of %s: %w", name, err)
	}
	h, err := ioctl(ctl, unix.DM_DEV_SUSPEND, name, 0, 0, nil) // without the suspend flag: resume
	if err != nil {
		_, _ = ioctl(ctl, unix.DM_DEV_REMOVE, name, 0, 0, nil)
		return "", fmt.Errorf("activate %s: %w", name, err)
	}
	path := "/dev/dm-" + strconv.FormatUint(uint64(unix.Minor(h.Dev)), 10)
	for i := 0; ; i++ {
		_, err := os.Stat(path)
		if err == nil {
			return path, nil
		}
		if !errors.Is(err, os.ErrNotExist) || i == 200 {
			_ = Remove(name)
			return "", fmt.Errorf("%s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Remove removes the device name (the kernel forgets its table, keys
// included).
func Remove(name string) error {
	ctl, err := control()
	if err != nil {
		return err
	}
	defer ctl.Close()
	var last error
	for i := 0; i < 50; i++ { // briefly busy right after an unmount
		if _, last = ioctl(ctl, unix.DM_DEV_REMOVE, name, 0, 0, nil); last == nil || errors.Is(last, unix.ENXIO) {
			return nil
		}
		if !errors.Is(last, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove %s: %w", name, last)
}
