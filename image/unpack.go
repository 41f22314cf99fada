package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Overlayfs markers written for OCI whiteouts.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// UnpackStats counts what Unpack wrote.
type UnpackStats struct {
	Entries int64
	Bytes   int64
}

// ErrUnsafeEntry marks a tar entry refused because it would write outside the
// layer directory or through a symlink.
var ErrUnsafeEntry = errors.New("unsafe layer entry")

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Unpack extracts an uncompressed layer tar stream into dir, which must be an
// existing, empty directory, so that dir can serve as an overlayfs lower layer:
// OCI whiteouts become overlayfs whiteouts (0/0 character devices) and opaque
// markers become the trusted.overlay.opaque xattr.
//
// The stream is untrusted. Entries whose names contain "..", entries whose
// parent path goes through a symlink, hard links to such paths and trusted.*
// xattrs are refused with an error wrapping ErrUnsafeEntry; no byte is ever
// written outside dir. Absolute names are taken relative to dir.
func Unpack(r io.Reader, dir string) (UnpackStats, error) {
	pend, st, err := extract(r, dir)
	if err != nil {
		return st, err
	}
	return st, pend.finish()
}

// dirTime is a directory's times, applied once its children exist.
type dirTime struct {
	rel string
	ts  [2]unix.Timespec
}

// pending is what extraction defers until the layer's content was checked:
// directory times. finish applies them; a caller that found the layer's
// digest wrong never calls it and discards the directory.
type pending struct {
	dir      string
	dirTimes []dirTime
}

// finish applies the deferred directory times. Each path is resolved anew
// beneath the layer root with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS and the
// times set on its last component without following it: a later entry that
// replaced a directory (or one of its parents) with a symlink cannot point
// the operation outside the layer. Such a directory is skipped.
func (p *pending) finish() error {
	if len(p.dirTimes) == 0 {
		return nil
	}
	root, err := unix.Open(p.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open layer directory %s: %w", p.dir, err)
	}
	defer unix.Close(root)
	for i := len(p.dirTimes) - 1; i >= 0; i-- {
		d := p.dirTimes[i]
		parent, base := path.Split(d.rel)
		pfd := root
		if parent = strings.TrimSuffix(parent, "/"); parent != "" {
			fd, err := unix.Openat2(root, parent, &resolveHow)
			if err != nil {
				continue // no longer a directory path inside the layer
			}
			pfd = fd
		}
		var st unix.Stat_t
		if unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			_ = unix.UtimesNanoAt(pfd, base, []unix.Timespec{d.ts[0], d.ts[1]}, unix.AT_SYMLINK_NOFOLLOW)
		}
		if pfd != root {
			unix.Close(pfd)
		}
	}
	return nil
}

// extract writes every entry of the layer into dir and returns what it
// deferred (see pending).
func extract(r io.Reader, dir string) (*pending, UnpackStats, error) {
	var st UnpackStats
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, st, fmt.Errorf("open layer directory %s: %w", dir, err)
	}
	u := &unpacker{root: root, dirs: map[string]int{}}
	defer u.close()
	pend := &pending{dir: dir}

	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("read layer tar: %w", err)
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return nil, st, err
		}
		st.Entries++
		if rel == "" { // the layer root itself
			continue
		}
		parent, base := path.Split(rel)
		parent = strings.TrimSuffix(parent, "/")
		pfd, err := u.dir(parent)
		if err != nil {
			return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		if base == whiteoutOpaque {
			if err := unix.Fsetxattr(pfd, opaqueXattr, []byte("y"), 0); err != nil {
				return nil, st, fmt.Errorf("entry %q: mark directory opaque: %w", hdr.Name, err)
			}
			continue
		}
		if strings.HasPrefix(base, whiteoutPrefix) {
			name := strings.TrimPrefix(base, whiteoutPrefix)
			if name == "" || name == "." || name == ".." {
				return nil, st, fmt.Errorf("entry %q: bad whiteout name: %w", hdr.Name, ErrUnsafeEntry)
			}
			if err := u.replace(pfd, name, false); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
				return nil, st, fmt.Errorf("entry %q: write whiteout: %w", hdr.Name, err)
			}
			continue
		}
		if err := checkXattrs(hdr); err != nil {
			return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		ts := [2]unix.Timespec{unix.NsecToTimespec(hdr.AccessTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		if hdr.AccessTime.IsZero() {
			ts[0] = ts[1]
		}
		mode := uint32(hdr.Mode) & 0o7777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := u.mkdir(pfd, base, mode); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			if err := u.meta(pfd, base, hdr, mode, nil); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			pend.dirTimes = append(pend.dirTimes, dirTime{rel, ts})
		case tar.TypeReg, '\x00': // '\x00' is the pre-POSIX regular file type of old layers
			n, err := u.file(pfd, base, hdr, mode, tr, ts)
			st.Bytes += n
			if err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := u.replace(pfd, base, false); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
				return nil, st, fmt.Errorf("entry %q: symlink: %w", hdr.Name, err)
			}
			if err := u.meta(pfd, base, hdr, 0, &ts); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil || target == "" {
				return nil, st, fmt.Errorf("entry %q: hard link target %q: %w", hdr.Name, hdr.Linkname, ErrUnsafeEntry)
			}
			tparent, tbase := path.Split(target)
			tfd, err := u.dir(strings.TrimSuffix(tparent, "/"))
			if err != nil {
				return nil, st, fmt.Errorf("entry %q: hard link target %q: %w", hdr.Name, hdr.Linkname, err)
			}
			if err := u.replace(pfd, base, false); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
				return nil, st, fmt.Errorf("entry %q: hard link to %q: %w", hdr.Name, hdr.Linkname, err)
			}
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			ft := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
			if err := u.replace(pfd, base, false); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
			if err := unix.Mknodat(pfd, base, ft|mode, dev); err != nil {
				return nil, st, fmt.Errorf("entry %q: mknod: %w", hdr.Name, err)
			}
			if err := u.meta(pfd, base, hdr, mode, &ts); err != nil {
				return nil, st, fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			// Consumed by archive/tar; nothing to write.
		default:
			return nil, st, fmt.Errorf("entry %q: unsupported tar entry type %q", hdr.Name, hdr.Typeflag)
		}
	}
	return pend, st, nil
}

// cleanName turns a tar entry name into a relative, clean path ("" for the
// root) and refuses names that climb with "..".
func cleanName(name string) (string, error) {
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("entry %q: path contains \"..\": %w", name, ErrUnsafeEntry)
		}
	}
	p := path.Clean("/" + name)
	p = strings.TrimPrefix(p, "/")
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("entry %q: NUL in name: %w", name, ErrUnsafeEntry)
	}
	return p, nil
}

func checkXattrs(hdr *tar.Header) error {
	for k := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && strings.HasPrefix(x, "trusted.") {
			return fmt.Errorf("xattr %q is not allowed in a layer: %w", x, ErrUnsafeEntry)
		}
	}
	return nil
}
