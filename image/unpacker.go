package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// unpacker holds directory descriptors resolved beneath the layer root.
// Every directory is resolved with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so
// nothing a layer contains can redirect a write outside the root.
type unpacker struct {
	root int
	dirs map[string]int // relative path -> open directory fd
}

const maxCachedDirs = 512

func (u *unpacker) close() {
	u.flush()
	unix.Close(u.root)
}

func (u *unpacker) flush() {
	for k, fd := range u.dirs {
		unix.Close(fd)
		delete(u.dirs, k)
	}
}

var resolveHow = unix.OpenHow{
	Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
}

// dir returns a descriptor for the directory rel ("" is the root), creating
// missing components with mode 0755 as tar extraction does.
func (u *unpacker) dir(rel string) (int, error) {
	if rel == "" {
		return u.root, nil
	}
	if fd, ok := u.dirs[rel]; ok {
		return fd, nil
	}
	fd, err := unix.Openat2(u.root, rel, &resolveHow)
	if errors.Is(err, unix.ENOENT) {
		// Create the missing components one by one.
		cur := u.root
		parts := strings.Split(rel, "/")
		for i, p := range parts {
			next, err := unix.Openat2(cur, p, &resolveHow)
			if errors.Is(err, unix.ENOENT) {
				if err := unix.Mkdirat(cur, p, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
					return -1, fmt.Errorf("create directory %q: %w", strings.Join(parts[:i+1], "/"), err)
				}
				next, err = unix.Openat2(cur, p, &resolveHow)
			}
			if cur != u.root {
				unix.Close(cur)
			}
			if err != nil {
				return -1, u.pathErr(strings.Join(parts[:i+1], "/"), err)
			}
			cur = next
		}
		fd, err = cur, nil
	}
	if err != nil {
		return -1, u.pathErr(rel, err)
	}
	if len(u.dirs) >= maxCachedDirs {
		u.flush()
	}
	u.dirs[rel] = fd
	return fd, nil
}

func (u *unpacker) pathErr(rel string, err error) error {
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("resolve %q: %w", rel, err)
	}
	// Name the first component that is not a real directory.
	parts := strings.Split(rel, "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		var st unix.Stat_t
		if unix.Fstatat(u.root, prefix, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			break
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			continue
		case unix.S_IFLNK:
			return fmt.Errorf("path %q goes through the symlink %q: %w", rel, prefix, ErrUnsafeEntry)
		default:
			return fmt.Errorf("path %q goes through the non-directory %q: %w", rel, prefix, ErrUnsafeEntry)
		}
	}
	return fmt.Errorf("path %q does not resolve to a directory inside the layer: %w", rel, ErrUnsafeEntry)
}

// replace removes an existing entry name in pfd so a new one can take its
// place; keepDir leaves an existing directory alone.
func (u *unpacker) replace(pfd int, name string, keepDir bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat existing entry: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return nil
		}
		u.flush() // cached descriptors may point below the removed directory
		return removeAllAt(pfd, name)
	}
	return unix.Unlinkat(pfd, name, 0)
}

// removeAllAt removes name in dirfd recursively without following symlinks.
func removeAllAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("remove directory %q: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory %q: %w", name, err)
	}
	buf := make([]byte, 8192)
	for {
		n, err := unix.ReadDirent(fd, buf)
		if err != nil || n == 0 {
			break
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, child := range names {
			if err := unix.Unlinkat(fd, child, 0); errors.Is(err, unix.EISDIR) {
				if err := removeAllAt(fd, child); err != nil {
					unix.Close(fd)
					return err
				}
			}
		}
	}
	unix.Close(fd)
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

func (u *unpacker) mkdir(pfd int, name string, mode uint32) error {
	if err := u.replace(pfd, name, true); err != nil {
		return err
	}
	if err := unix.Mkdirat(pfd, name, mode); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mkdir: %w", err)
	}
	return nil
}

func (u *unpacker) file(pfd int, name string, hdr *tar.Header, mode uint32, r io.Reader, ts [2]unix.Timespec) (int64, error) {
	if err := u.replace(pfd, name, false); err != nil {
		return 0, err
	}
	fd, err := unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create file: %w", err)
	}
	defer unix.Close(fd)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	n, err := io.CopyBuffer(fdWriter(fd), io.LimitReader(r, hdr.Size), *bp)
	if err != nil {
		return n, fmt.Errorf("write file: %w", err)
	}
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return n, fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return n, fmt.Errorf("chmod: %w", err)
	}
	if err := setXattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return n, err
	}
	if err := unix.UtimesNanoAt(pfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return n, fmt.Errorf("set times: %w", err)
	}
	return n, nil
}

// meta applies owner, mode (0 skips chmod, as for symlinks), xattrs and, when
// ts is set, times to name in pfd without following a symlink.
func (u *unpacker) meta(pfd int, name string, hdr *tar.Header, mode uint32, ts *[2]unix.Timespec) error {
	if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Fchmodat(pfd, name, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		if len(hdr.PAXRecords) > 0 && hdr.Typeflag == tar.TypeDir {
			fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
			if err == nil {
				err = setXattrs(hdr, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) })
				unix.Close(fd)
			}
			if err != nil {
				return err
			}
		}
	}
	if ts != nil {
		if err := unix.UtimesNanoAt(pfd, name, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
	}
	return nil
}

func setXattrs(hdr *tar.Header, set func(string, []byte) error) error {
	for k, v := range hdr.PAXRecords {
		x, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if err := set(x, []byte(v)); err != nil {
			return fmt.Errorf("set xattr %q: %w", x, err)
		}
	}
	return nil
}

type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(w), p[n:])
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return n, err
		}
		n += m
	}
	return n, nil
}
