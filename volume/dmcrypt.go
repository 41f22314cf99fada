package volume

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// HasDMCrypt reports whether the kernel offers dm-crypt (device-mapper with
// the crypt target) and cryptsetup is installed, so volumes can be opened
// by the kernel.
func HasDMCrypt() bool {
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/misc")
	if err != nil || !bytes.Contains(b, []byte("device-mapper")) {
		return false
	}
	if _, err := os.Stat("/sys/module/dm_crypt"); err == nil {
		return true
	}
	out, err := exec.Command("dmsetup", "targets").Output()
	return err == nil && bytes.Contains(out, []byte("crypt"))
}

// Kernel is a volume opened by dm-crypt.
type Kernel struct {
	Name, Target string
}

// OpenKernel opens image with cryptsetup (the key on a pipe, never in a
// file) as /dev/mapper/name and mounts it at target.
func OpenKernel(image string, key []byte, readOnly bool, name, target string) (*Kernel, error) {
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

// Close unmounts and closes the mapping (the kernel forgets the key).
func (k *Kernel) Close() error {
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
