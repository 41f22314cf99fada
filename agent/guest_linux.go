package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// GuestConfig is the initramfs's /etc/cocoon/guest.json (written by
// cocoon guest build).
type GuestConfig struct {
	Modules []string `json:"modules"`
}

// Guest paths of a VM sandbox.
const (
	GuestStateDir = "/run/cocoon/agent"
	GuestLayerDir = "/var/lib/cocoon/layers"
	guestPortName = "cocoon.agent"
)

// GuestInit prepares a sandbox VM when cocoon-agent is its init: it mounts
// the kernel filesystems, loads the modules the image lists, moves the root
// from the initramfs to a tmpfs (runc's pivot_root cannot leave the
// initramfs), mounts cgroups and brings up loopback. It returns the
// kernel command line's cocoon.* parameters, and kernel_s: the uptime at
// which init started.
func GuestInit() (map[string]string, error) {
	if err := mountAll(unix.MS_NOSUID, []guestMount{
		{"devtmpfs", "/dev", "mode=0755"}, {"proc", "/proc", ""}, {"sysfs", "/sys", ""},
	}); err != nil {
		return nil, err
	}
	uptime, _ := os.ReadFile("/proc/uptime")
	b, err := os.ReadFile("/etc/cocoon/guest.json")
	if err != nil {
		return nil, fmt.Errorf("guest config: %w", err)
	}
	var gc GuestConfig
	if err := json.Unmarshal(b, &gc); err != nil {
		return nil, fmt.Errorf("guest config: %w", err)
	}
	for _, m := range gc.Modules {
		if err := loadModule("/" + m); err != nil {
			return nil, err
		}
		_ = os.Remove("/" + m) // loaded: its file is only guest memory now
	}
	if err := switchRoot(); err != nil {
		return nil, fmt.Errorf("switch root: %w", err)
	}
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
	if f := strings.Fields(string(uptime)); len(f) > 0 {
		params["kernel_s"] = f[0] // how long the kernel took to start init
	}
	for _, f := range strings.Fields(string(cmdline)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "cocoon.") {
			params[strings.TrimPrefix(k, "cocoon.")] = v
		}
	}
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

// switchRoot makes a tmpfs the root: the initramfs's read-only parts are
// bind-mounted into it, /dev, /proc and /sys move, and the process chroots.
func switchRoot() error {
	const nr = "/sysroot"
	if err := os.MkdirAll(nr, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", nr, "tmpfs", 0, "mode=0755"); err != nil {
		return err
	}
	ents, err := os.ReadDir("/")
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		src, dst := "/"+name, filepath.Join(nr, name)
		switch name {
		case "sysroot":
			continue
		case "dev", "proc", "sys":
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			if err := unix.Mount(src, dst, "", unix.MS_MOVE, ""); err != nil {
				return fmt.Errorf("move %s: %w", src, err)
			}
			continue
		case "run", "tmp", "var":
			// Writable, in guest memory.
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
			continue
		}
		if e.Type()&os.ModeSymlink != 0 {
			t, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, dst); err != nil {
				return err
			}
			continue
		}
		if e.IsDir() {
			err = os.Mkdir(dst, 0o755)
		} else {
			err = os.WriteFile(dst, nil, 0o755)
		}
		if err != nil {
			return err
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", src, err)
		}
	}
	if err := os.Chmod(filepath.Join(nr, "tmp"), 0o1777); err != nil {
		return err
	}
	if err := unix.Chdir(nr); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return unix.Chdir("/")
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
