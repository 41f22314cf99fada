package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// diskFile is the FUSE file that exposes a Device's plaintext.
type diskFile struct {
	fs.Inode
	dev *Device
	ra  *readahead
}

var (
	_ fs.NodeGetattrer = (*diskFile)(nil)
	_ fs.NodeOpener    = (*diskFile)(nil)
	_ fs.NodeReader    = (*diskFile)(nil)
	_ fs.NodeWriter    = (*diskFile)(nil)
	_ fs.NodeFsyncer   = (*diskFile)(nil)
)

func (d *diskFile) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o600
	if d.dev.readOnly {
		out.Mode = syscall.S_IFREG | 0o400
	}
	out.Size = uint64(d.dev.Size())
	return 0
}

func (d *diskFile) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if d.dev.readOnly && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (d *diskFile) Read(_ context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	data, release, err := d.ra.view(dest, off)
	if err != nil && len(data) == 0 && off < d.dev.Size() {
		release()
		return nil, syscall.EIO
	}
	return &chunkResult{data: data, release: release}, 0
}

// chunkResult is a FUSE read reply served straight from a read-ahead
// chunk: go-fuse copies it to the kernel, then calls Done, which lets the
// chunk go.
type chunkResult struct {
	data    []byte
	release func()
}

func (c *chunkResult) Bytes([]byte) ([]byte, fuse.Status) { return c.data, fuse.OK }
func (c *chunkResult) Size() int                          { return len(c.data) }
func (c *chunkResult) Done()                              { c.release() }

func (d *diskFile) Write(_ context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := d.ra.WriteAt(data, off)
	if errors.Is(err, ErrReadOnly) {
		return 0, syscall.EROFS
	}
	if err != nil {
		return uint32(n), syscall.EIO
	}
	return uint32(n), 0
}

func (d *diskFile) Fsync(_ context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	if err := d.dev.Sync(); err != nil {
		return syscall.EIO
	}
	return 0
}

// Userspace is an opened volume on the userspace path: the decrypted block
// device is a FUSE file, a loop device sits on it, and the filesystem is
// mounted from the loop device.
type Userspace struct {
	dev      *Device
	ra       *readahead
	server   *fuse.Server
	fuseDir  string
	Loop     string
	Target   string
	readOnly bool
}

// OpenUserspace exposes dev through FUSE in fuseDir (which it creates),
// attaches a loop device and mounts the filesystem at target.
func OpenUserspace(dev *Device, fuseDir, target string) (*Userspace, error) {
	if err := os.MkdirAll(fuseDir, 0o700); err != nil {
		return nil, err
	}
	file := &diskFile{dev: dev, ra: newReadahead(dev)}
	opts := &fs.Options{MountOptions: fuse.MountOptions{FsName: "cocoon-volume", Name: "cocoonvol", DirectMount: true, MaxWrite: 1 << 20, MaxReadAhead: 1 << 20, DisableSplice: true, MaxBackground: 64, ExtraCapabilities: fuse.CAP_ASYNC_DIO}}
	timeout := time.Duration(0)
	opts.EntryTimeout, opts.AttrTimeout = &timeout, &timeout
	server, err := fs.Mount(fuseDir, &rootNode{file: file}, opts)
	if err != nil {
		return nil, fmt.Errorf("FUSE mount: %w", err)
	}
	u := &Userspace{dev: dev, ra: file.ra, server: server, fuseDir: fuseDir, Target: target, readOnly: dev.readOnly}
	if u.Loop, err = attachLoop(filepath.Join(fuseDir, "disk"), dev.readOnly); err != nil {
		u.Close()
		return nil, err
	}
	// A larger read-ahead turns sequential reads into few large FUSE
	// requests (each a round trip to this process).
	q := "/sys/block/" + filepath.Base(u.Loop) + "/queue/"
	_ = os.WriteFile(q+"read_ahead_kb", []byte("4096"), 0o644)
	_ = os.WriteFile(q+"max_sectors_kb", []byte("1024"), 0o644)
	if err := os.MkdirAll(target, 0o755); err != nil {
		u.Close()
		return nil, err
	}
	var mflags uintptr = unix.MS_NODEV | unix.MS_NOSUID
	data := ""
	if dev.readOnly {
		mflags |= unix.MS_RDONLY
		data = "noload"
	}
	if err := unix.Mount(u.Loop, target, "ext4", mflags, data); err != nil {
		u.Close()
		return nil, fmt.Errorf("mount the filesystem (ext4) from %s: %w", u.Loop, err)
	}
	return u, nil
}

type rootNode struct {
	fs.Inode
	file *diskFile
}

var _ fs.NodeOnAdder = (*rootNode)(nil)

func (r *rootNode) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
	r.AddChild("disk", ch, false)
}

// Wait serves until the FUSE file system is unmounted.
func (u *Userspace) Wait() { u.server.Wait() }

// Close unmounts the filesystem, detaches the loop device, stops FUSE and
// forgets the key.
func (u *Userspace) Close() error {
	var errs []error
	if u.Target != "" {
		if err := unix.Unmount(u.Target, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", u.Target, err))
		}
	}
	if u.Loop != "" {
		if err := detachLoop(u.Loop); err != nil {
			errs = append(errs, err)
		}
	}
	if u.server != nil {
		if err := u.unmountFUSE(); err != nil {
			errs = append(errs, fmt.Errorf("FUSE unmount: %w", err))
		}
	}
	_ = os.Remove(u.fuseDir)
	if u.ra != nil {
		u.ra.Close()
	}
	if u.dev != nil {
		errs = append(errs, u.dev.Close())
	}
	return errors.Join(errs...)
}

// unmountFUSE unmounts the FUSE file system. The kernel releases a detached
// loop device's backing file asynchronously (after the last opener, such as
// udev's probe, closes the device), so the mount can be busy for a while
// after the detach: it waits for the loop device to let go of the file, and
// if the mount is still busy after that, detaches it lazily so the kernel
// drops it (and the server stops) once the last reference goes.
func (u *Userspace) unmountFUSE() error {
	if u.Loop != "" {
		waitLoopReleased(u.Loop, 10*time.Second)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := u.server.Unmount()
		if err == nil || !strings.Contains(err.Error(), "busy") {
			return err
		}
		if time.Now().After(deadline) {
			if lerr := unix.Unmount(u.fuseDir, unix.MNT_DETACH); lerr != nil {
				return fmt.Errorf("%w (lazy unmount: %w)", err, lerr)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
