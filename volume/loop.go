package volume

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// attachLoop attaches file to a free loop device with ioctls (no losetup:
// a VM guest has none) and returns the device path.
func attachLoop(file string, readOnly bool) (string, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	backing, err := os.OpenFile(file, flag, 0)
	if err != nil {
		return "", err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("loop devices: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	var cfg unix.LoopConfig
	cfg.Fd = uint32(backing.Fd())
	// Direct I/O: the loop device submits its requests to the file
	// asynchronously, several in flight, instead of one synchronous
	// read at a time through a page cache of the file.
	cfg.Info.Flags = unix.LO_FLAGS_DIRECT_IO
	if readOnly {
		cfg.Info.Flags |= unix.LO_FLAGS_READ_ONLY
	}
	var lastErr error
	for range 20 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("find a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		lf, err := openLoop(dev, flag)
		if err != nil {
			return "", err
		}
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		lf.Close()
		if err == nil {
			return dev, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return "", fmt.Errorf("attach %s to %s: %w", file, dev, err)
		}
		lastErr = err // another process took it first
	}
	return "", fmt.Errorf("attach %s to a loop device: %w", file, lastErr)
}

// openLoop opens a loop device node, waiting briefly for devtmpfs to create
// a new one.
func openLoop(dev string, flag int) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.OpenFile(dev, flag, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || i == 50 {
			return f, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// detachLoop detaches a loop device.
func detachLoop(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// waitLoopReleased waits up to limit for a detached loop device to drop its
// backing file: the kernel does that when the device's last opener closes
// it, which can be after LOOP_CLR_FD returns.
func waitLoopReleased(dev string, limit time.Duration) {
	backing := "/sys/block/" + filepath.Base(dev) + "/loop/backing_file"
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(backing); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
