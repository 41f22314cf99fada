// Package layerdisk builds a layer disk: the read-only file system image
// of an OCI layer (squashfs 4.0, uncompressed) with a dm-verity hash tree,
// reproducibly — the same layer gives the same bytes, and so the same
// verity root hash, on any machine — so that a policy can pin the root
// hash the generator computed and a VM sandbox can open the disk the host
// built. OCI whiteouts become overlayfs whiteouts (a 0/0 character device;
// trusted.overlay.opaque=y on an opaque directory), so the agent stacks
// layer disks with overlayfs as it stacks unpacked layers.
package layerdisk

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Bounds of what a layer can make the builder hold in memory.
const (
	MaxEntries    = 1 << 20
	MaxXattrBytes = 64 << 10
	MaxNameBytes  = 255
)

// node is one inode of the tree: a directory, a file, a symlink, a device
// or a fifo. Hard links share a node.
type node struct {
	mode     uint32 // type bits (S_IF*) and permissions
	uid, gid uint32
	mtime    uint32
	nlink    uint32
	xattrs   []xattr
	// Directories.
	children map[string]*node
	// Regular files: where the data is in the image.
	size       int64
	dataStart  int64
	blockSizes []uint32
	// Symlinks.
	target string
	// Devices.
	rdev uint32
	// Set while writing.
	number uint32
	ref    uint64
	typ    uint16 // the inode type written (basic or extended)
}

type xattr struct {
	typ   uint16 // 0 user, 1 trusted, 2 security
	name  string // without its prefix
	value []byte
}

const (
	sIFMT   = 0o170000
	sIFDIR  = 0o040000
	sIFREG  = 0o100000
	sIFLNK  = 0o120000
	sIFBLK  = 0o060000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
	sIFSOCK = 0o140000
)

func (n *node) isDir() bool { return n.mode&sIFMT == sIFDIR }

// tree is a layer's file system as the builder reads it.
type tree struct {
	root    *node
	entries int
}

func newTree() *tree {
	return &tree{root: &node{mode: sIFDIR | 0o755, nlink: 2, children: map[string]*node{}}}
}

// clean turns a tar name into the path inside the layer ("" for the root),
// refusing names that escape it.
func clean(name string) (string, error) {
	p := path.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("tar entry %q: NUL in the name", name)
	}
	p = strings.TrimPrefix(p, "/")
	for _, c := range strings.Split(p, "/") {
		if len(c) > MaxNameBytes {
			return "", fmt.Errorf("tar entry %q: a name longer than %d bytes", name, MaxNameBytes)
		}
	}
	return p, nil
}

// dir returns the directory at p, making missing parents as tar readers do
// (0755, root-owned, time 0).
func (t *tree) dir(p string) (*node, error) {
	n := t.root
	if p == "" {
		return n, nil
	}
	for _, c := range strings.Split(p, "/") {
		child, ok := n.children[c]
		if !ok {
			child = &node{mode: sIFDIR | 0o755, nlink: 2, children: map[string]*node{}}
			n.children[c] = child
			t.entries++
		}
		if !child.isDir() {
			return nil, fmt.Errorf("%q: a parent is not a directory", p)
		}
		n = child
	}
	return n, nil
}

// lookup finds the node at p ("" is the root).
func (t *tree) lookup(p string) *node {
	n := t.root
	if p == "" {
		return n
	}
	for _, c := range strings.Split(p, "/") {
		if n.children == nil {
			return nil
		}
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

// xattrsOf reads a tar header's extended attributes (PAX SCHILY.xattr.*).
func xattrsOf(h *tar.Header) ([]xattr, error) {
	var out []xattr
	total := 0
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		x := xattr{value: []byte(v)}
		switch {
		case strings.HasPrefix(name, "user."):
			x.typ, x.name = 0, strings.TrimPrefix(name, "user.")
		case strings.HasPrefix(name, "trusted."):
			// trusted.* would forge overlayfs metadata (the unpacker
			// refuses it for the same reason).
			return nil, fmt.Errorf("tar entry %q: trusted.* extended attribute %q", h.Name, name)
		case strings.HasPrefix(name, "security."):
			x.typ, x.name = 2, strings.TrimPrefix(name, "security.")
		default:
			return nil, fmt.Errorf("tar entry %q: extended attribute %q has no user., trusted. or security. prefix", h.Name, name)
		}
		total += len(name) + len(v)
		if total > MaxXattrBytes {
			return nil, fmt.Errorf("tar entry %q: extended attributes over %d bytes", h.Name, MaxXattrBytes)
		}
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].typ != out[j].typ {
			return out[i].typ < out[j].typ
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

func mtimeOf(h *tar.Header) uint32 {
	s := h.ModTime.Unix()
	if s < 0 {
		return 0
	}
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}

// add records one tar entry. Regular files' data is written by data, which
// returns where it went.
func (t *tree) add(h *tar.Header, data func(size int64) (int64, []uint32, error)) error {
	t.entries++
	if t.entries > MaxEntries {
		return fmt.Errorf("more than %d entries", MaxEntries)
	}
	p, err := clean(h.Name)
	if err != nil {
		return err
	}
	dirPath, base := path.Split(p)
	dirPath = strings.TrimSuffix(dirPath, "/")
	// OCI whiteouts.
	if base == ".wh..wh..opq" {
		d, err := t.dir(dirPath)
		if err != nil {
			return err
		}
		d.xattrs = append(d.xattrs, xattr{typ: 1, name: "overlay.opaque", value: []byte("y")})
		return nil
	}
	if name, ok := strings.CutPrefix(base, ".wh."); ok {
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("tar entry %q: a whiteout of nothing", h.Name)
		}
		d, err := t.dir(dirPath)
		if err != nil {
			return err
		}
		d.children[name] = &node{mode: sIFCHR, nlink: 1, mtime: mtimeOf(h)}
		return nil
	}
	xs, err := xattrsOf(h)
	if err != nil {
		return err
	}
	perm := uint32(h.Mode) & 0o7777
	n := &node{mode: perm, uid: uint32(h.Uid), gid: uint32(h.Gid), mtime: mtimeOf(h), nlink: 1, xattrs: xs}
	if p == "" {
		if h.Typeflag != tar.TypeDir {
			return fmt.Errorf("tar entry %q: the root is not a directory", h.Name)
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if old := t.lookup(p); old != nil && old.isDir() {
			// Keep its children; take the entry's metadata.
			old.mode, old.uid, old.gid, old.mtime, old.xattrs = sIFDIR|perm, n.uid, n.gid, n.mtime, xs
			return nil
		}
		n.mode |= sIFDIR
		n.nlink, n.children = 2, map[string]*node{}
	case tar.TypeReg: // (the reader reports old tars' "\x00" as TypeReg)
		n.mode |= sIFREG
		if h.Size < 0 {
			return fmt.Errorf("tar entry %q: negative size", h.Name)
		}
		n.size = h.Size
		if n.dataStart, n.blockSizes, err = data(h.Size); err != nil {
			return fmt.Errorf("tar entry %q: %w", h.Name, err)
		}
	case tar.TypeSymlink:
		// A symlink's permissions mean nothing; Linux shows 0777.
		n.mode = sIFLNK | 0o777
		if h.Linkname == "" || len(h.Linkname) > 4095 {
			return fmt.Errorf("tar entry %q: symlink target of %d bytes", h.Name, len(h.Linkname))
		}
		n.target = h.Linkname
	case tar.TypeLink:
		lp, err := clean(h.Linkname)
		if err != nil {
			return err
		}
		target := t.lookup(lp)
		if target == nil || target.isDir() {
			return fmt.Errorf("tar entry %q: hard link to %q, which is not a file of the layer", h.Name, h.Linkname)
		}
		d, err := t.dir(dirPath)
		if err != nil {
			return err
		}
		if base == "" {
			return fmt.Errorf("tar entry %q: a hard link named like the root", h.Name)
		}
		target.nlink++
		d.children[base] = target
		return nil
	case tar.TypeChar, tar.TypeBlock:
		if h.Typeflag == tar.TypeChar {
			n.mode |= sIFCHR
		} else {
			n.mode |= sIFBLK
		}
		n.rdev = devEncode(uint32(h.Devmajor), uint32(h.Devminor))
	case tar.TypeFifo:
		n.mode |= sIFIFO
	default:
		return fmt.Errorf("tar entry %q: type %q is not supported", h.Name, h.Typeflag)
	}
	if p == "" {
		t.root.mode, t.root.uid, t.root.gid, t.root.mtime, t.root.xattrs = n.mode, n.uid, n.gid, n.mtime, n.xattrs
		return nil
	}
	d, err := t.dir(dirPath)
	if err != nil {
		return err
	}
	if old, ok := d.children[base]; ok && old.isDir() && !n.isDir() {
		return fmt.Errorf("tar entry %q replaces a directory", h.Name)
	}
	d.children[base] = n
	return nil
}

// devEncode is squashfs's (and the kernel's new_encode_dev) device number.
func devEncode(major, minor uint32) uint32 {
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

var errShort = errors.New("tar entry shorter than its header says")

// readTree reads a layer tar, writing file data through data.
func readTree(r io.Reader, data func(io.Reader, int64) (int64, []uint32, error)) (*tree, error) {
	t := newTree()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return t, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read layer tar: %w", err)
		}
		if err := t.add(h, func(size int64) (int64, []uint32, error) { return data(tr, size) }); err != nil {
			return nil, err
		}
	}
}
