package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Guest paths of a VM sandbox.
const (
	GuestStateDir = "/run/cocoon/agent"
	GuestLayerDir = "/var/lib/cocoon/layers"
	// GuestLayerDiskDir is where the layer disks are mounted.
	GuestLayerDiskDir = "/run/cocoon/layerdisks"
	guestPortName     = "cocoon.agent"
)

// GuestInit prepares a sandbox VM for the agent once cocoon-init has
// switched to the root filesystem (see package guest): cgroups, devpts and
// shared memory, the state directories in guest memory, loopback. It
// returns the kernel command line's cocoon.* parameters, and kernel_s: the
// uptime at which init started.
func GuestInit() (map[string]string, error) {
	if err := mountAll(unix.MS_NOSUID|unix.MS_NOEXEC, []guestMount{
		{"cgroup2", "/sys/fs/cgroup", ""},
		{"devpts", "/dev/pts", "newinstance,ptmxmode=0666,mode=0620"},
		{"tmpfs", "/dev/shm", "mode=1777"},
	}); err != nil {
		return nil, err
	}
	// Containers need the controllers in the subtree runc creates.
	if ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		var en []string
		for _, c := range strings.Fields(string(ctl)) {
			en = append(en, "+"+c)
		}
		_ = os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte(strings.Join(en, " ")), 0o644)
	}
	for _, d := range []string{GuestStateDir, GuestLayerDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := loopbackUp(); err != nil {
		return nil, fmt.Errorf("bring up loopback: %w", err)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	params := map[string]string{}
	for _, f := range strings.Fields(string(cmdline)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "cocoon.") {
			params[strings.TrimPrefix(k, "cocoon.")] = v
		}
	}
	params["kernel_s"] = os.Getenv("COCOON_KERNEL_S")
	return params, nil
}

// guestMount is a kernel filesystem mounted at boot (the source names the
// type).
type guestMount struct{ fs, dst, data string }

func mountAll(flags uintptr, ms []guestMount) error {
	for _, m := range ms {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fs, m.dst, m.fs, flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	return nil
}

// GuestPort finds the virtio-serial port the host's runtime listens on.
func GuestPort(timeout time.Duration) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	for {
		ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range ports {
			b, err := os.ReadFile(p)
			if err != nil || strings.TrimSpace(string(b)) != guestPortName {
				continue
			}
			dev := "/dev/" + filepath.Base(filepath.Dir(p))
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err == nil {
				return f, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no virtio-serial port named %s after %s (QEMU: -device virtserialport,name=%s)", guestPortName, timeout, guestPortName)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PowerOff ends the VM.
func PowerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
