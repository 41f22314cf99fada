// Package guestinit is what runs in a VM guest before the agent: cocoon-init
// (the initramfs's /init) opens the dm-verity root filesystem the measured
// initramfs names and starts cocoon-agent from it. It is part of the TCB;
// the image builder that writes its configuration is package guest, on the
// host.
package guestinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/internal/dm"
)

// AgentPath is cocoon-agent in the root filesystem; cocoon-init runs it
// with GuestFlag.
const (
	AgentPath = "/usr/bin/cocoon-agent"
	GuestFlag = "--guest"
)

// Init is the guest's first process (cocoon-init, from the initramfs): it
// mounts the kernel filesystems, loads the modules, opens the root
// filesystem through dm-verity with the root hash the (measured)
// initramfs names, makes it the root with tmpfs for what is written, and
// runs the agent. It returns only on failure.
func Init() error {
	for _, m := range []struct{ fs, dst, data string }{
		{"devtmpfs", "/dev", "mode=0755"}, {"proc", "/proc", ""}, {"sysfs", "/sys", ""},
	} {
		if err := unix.Mount(m.fs, m.dst, m.fs, unix.MS_NOSUID, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	uptime, _ := os.ReadFile("/proc/uptime")
	b, err := os.ReadFile("/" + ConfigPath)
	if err != nil {
		return fmt.Errorf("guest config: %w", err)
	}
	var gc Config
	if err := json.Unmarshal(b, &gc); err != nil {
		return fmt.Errorf("guest config: %w", err)
	}
	if gc.Rootfs == nil {
		return errors.New("guest config names no root filesystem")
	}
	for _, m := range gc.Modules {
		if err := loadModule("/" + m); err != nil {
			return err
		}
		_ = os.Remove("/" + m) // loaded: its file would only take memory
	}
	// The initramfs stays in memory (tmpfs) under the new root: drop what
	// is no longer needed. This binary keeps running from its unlinked
	// file until the exec below frees it.
	_ = os.Remove("/init")
	_ = os.Remove("/" + ConfigPath)
	disk, err := FindSerial(gc.RootfsSerial, 10*time.Second)
	if err != nil {
		return err
	}
	v := gc.Rootfs
	dev, err := dm.Create("cocoon-root", []dm.Target{{
		Length: uint64(v.DataBlocks) * VerityBlock / 512, Type: "verity", Params: v.Params(disk),
	}}, true)
	if err != nil {
		return fmt.Errorf("root filesystem: %w", err)
	}
	// Small read-ahead: the root filesystem's pages are read as the agent
	// and runc touch them, not whole binaries up front (guest memory is
	// the sandbox's).
	for _, d := range []string{dev, disk} {
		_ = os.WriteFile("/sys/block/"+filepath.Base(d)+"/queue/read_ahead_kb", []byte("16"), 0o644)
	}
	const nr = "/sysroot"
	if err := unix.Mount(dev, nr, "squashfs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount the root filesystem (%s): %w", dev, err)
	}
	for _, d := range []string{"run", "tmp", "var"} {
		mode := "mode=0755"
		if d == "tmp" {
			mode = "mode=1777"
		}
		if err := unix.Mount("tmpfs", filepath.Join(nr, d), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, mode); err != nil {
			return fmt.Errorf("tmpfs on /%s: %w", d, err)
		}
	}
	for _, d := range []string{"dev", "proc", "sys"} {
		if err := unix.Mount("/"+d, filepath.Join(nr, d), "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move /%s: %w", d, err)
		}
	}
	if err := unix.Chdir(nr); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if f := strings.Fields(string(uptime)); len(f) > 0 {
		env = append(env, "COCOON_KERNEL_S="+f[0]) // how long the kernel took to start init
	}
	return syscall.Exec(AgentPath, []string{"cocoon-agent", GuestFlag}, env)
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kernel module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load kernel module %s: %w", filepath.Base(path), err)
	}
	return nil
}

// FindSerial returns the block device whose serial number is serial,
// waiting up to timeout for it to appear.
func FindSerial(serial string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ss, _ := filepath.Glob("/sys/block/*/serial")
		for _, s := range ss {
			b, err := os.ReadFile(s)
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + filepath.Base(filepath.Dir(s)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no disk with serial %s in the VM after %s (the host did not attach it)", serial, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
