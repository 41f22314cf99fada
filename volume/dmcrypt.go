package volume

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/internal/dm"
)

// HasDMCrypt reports whether the kernel offers dm-crypt (device-mapper with
// the crypt target), so volumes can be opened by the kernel: with
// cryptsetup when it is installed, else with device-mapper ioctls.
func HasDMCrypt() bool { return dm.Available("crypt") }

// Kernel is a volume opened by dm-crypt.
type Kernel struct {
	Name, Target string
	ioctl        bool // made with device-mapper ioctls, not cryptsetup
}

// OpenKernel opens image (a file or a block device) with dm-crypt as the
// device name and mounts it at target: with cryptsetup when it is there
// (the key on a pipe, never in a file), else by unlocking the LUKS2 header
// here and loading the crypt table with device-mapper ioctls.
func OpenKernel(image string, key []byte, readOnly bool, name, target string) (*Kernel, error) {
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		return openKernelIoctl(image, key, readOnly, name, target)
	}
	args := []string{"open", "--type", "luks2", "--key-file", "-", image, name}
	if readOnly {
		args = append(args, "--readonly")
	}
	c := exec.Command("cryptsetup", args...)
	c.Stdin = bytes.NewReader(key)
	if out, err := c.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cryptsetup open: %v: %s", err, out)
	}
	k := &Kernel{Name: name, Target: target}
	if err := os.MkdirAll(target, 0o755); err != nil {
		k.Close()
		return nil, err
	}
	margs := []string{"-t", "ext4"}
	if readOnly {
		margs = append(margs, "-o", "ro,noload")
	}
	if out, err := exec.Command("mount", append(margs, "/dev/mapper/"+name, target)...).CombinedOutput(); err != nil {
		k.Target = ""
		k.Close()
		return nil, fmt.Errorf("mount: %v: %s", err, out)
	}
	return k, nil
}

// openKernelIoctl: dm-crypt without cryptsetup (a VM guest has none).
func openKernelIoctl(image string, key []byte, readOnly bool, name, target string) (*Kernel, error) {
	d, _, err := Open(image, key, readOnly)
	if err != nil {
		return nil, err
	}
	// aes-xts-plain64 with 512-byte IV units over sector_size sectors, as
	// cryptsetup maps LUKS2.
	hexKey := make([]byte, hex.EncodedLen(len(d.key)))
	hex.Encode(hexKey, d.key)
	params := fmt.Sprintf("aes-xts-plain64 %s 0 %s %d 1 sector_size:%d", hexKey, image, d.offset/512, d.sector)
	clear(hexKey)
	d.Close()
	dev, err := dm.Create(name, []dm.Target{{Length: uint64(d.size / 512), Type: "crypt", Params: params}}, readOnly)
	if err != nil {
		return nil, fmt.Errorf("dm-crypt: %w", err)
	}
	k := &Kernel{Name: name, Target: target, ioctl: true}
	if err := os.MkdirAll(target, 0o755); err != nil {
		k.Target = ""
		k.Close()
		return nil, err
	}
	var flags uintptr = unix.MS_NODEV | unix.MS_NOSUID
	data := ""
	if readOnly {
		flags |= unix.MS_RDONLY
		data = "noload"
	}
	if err := unix.Mount(dev, target, "ext4", flags, data); err != nil {
		k.Target = ""
		k.Close()
		return nil, fmt.Errorf("mount the filesystem (ext4) from %s: %w", dev, err)
	}
	return k, nil
}

// Close unmounts and closes the mapping (the kernel forgets the key).
func (k *Kernel) Close() error {
	if k.ioctl {
		var errs []error
		if k.Target != "" {
			if err := unix.Unmount(k.Target, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", k.Target, err))
			}
		}
		if err := dm.Remove(k.Name); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	var errs []string
	if k.Target != "" {
		if out, err := exec.Command("umount", k.Target).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("umount: %v: %s", err, out))
		}
	}
	if out, err := exec.Command("cryptsetup", "close", k.Name).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Sprintf("cryptsetup close: %v: %s", err, out))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// Closer is an opened volume of either path.
type Closer interface{ Close() error }
