package layerdisk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
)

// The squashfs 4.0 format, uncompressed, as the Linux kernel reads it
// (fs/squashfs): data blocks after the superblock, then the inode table,
// the directory table, the id table and the xattr tables, each table a
// run of 8 KiB metadata blocks stored uncompressed.
const (
	blockSize     = 128 << 10
	blockLog      = 17
	metaSize      = 8192
	superSize     = 96
	invalidBlk    = math.MaxUint64
	uncompressed  = 1 << 24 // a data block's size word: stored as is
	metaUncompBit = 0x8000  // a metadata block's header: stored as is

	flagUncompInodes = 0x0001
	flagUncompData   = 0x0002
	flagUncompFrags  = 0x0008
	flagNoFragments  = 0x0010
	flagNoXattrs     = 0x0200
	flagUncompIDs    = 0x0800
	flagUncompXattrs = 0x0100

	typDir, typFile, typSymlink, typBlk, typChr, typFifo, typSock          = 1, 2, 3, 4, 5, 6, 7
	typLDir, typLFile, typLSymlink, typLBlk, typLChr, typLFifo, typLSocket = 8, 9, 10, 11, 12, 13, 14
)

// meta is a metadata stream: bytes cut into 8 KiB blocks, each stored
// with a 2-byte header (its length, "uncompressed").
type meta struct{ buf bytes.Buffer }

// pos is the reference of the next byte: the on-disk offset of its block
// within the table, and its offset inside the block.
func (m *meta) pos() (block uint32, offset uint16) {
	n := m.buf.Len()
	return uint32(n / metaSize * (metaSize + 2)), uint16(n % metaSize)
}

func (m *meta) ref() uint64 {
	b, o := m.pos()
	return uint64(b)<<16 | uint64(o)
}

func (m *meta) write(v ...any) {
	for _, x := range v {
		_ = binary.Write(&m.buf, binary.LittleEndian, x)
	}
}

// blocks returns the stored table and the on-disk offsets (relative to
// the table's start) of its blocks.
func (m *meta) blocks() ([]byte, []uint64) {
	var out bytes.Buffer
	var offs []uint64
	b := m.buf.Bytes()
	for len(b) > 0 {
		n := min(len(b), metaSize)
		offs = append(offs, uint64(out.Len()))
		_ = binary.Write(&out, binary.LittleEndian, uint16(n)|metaUncompBit)
		out.Write(b[:n])
		b = b[n:]
	}
	return out.Bytes(), offs
}

// image writes a squashfs image to w, a file positioned at 0.
type image struct {
	w   io.WriteSeeker
	off int64 // where the next data block goes
}

// data copies size bytes of a file from r into data blocks.
func (im *image) data(r io.Reader, size int64) (int64, []uint32, error) {
	start := im.off
	var sizes []uint32
	buf := make([]byte, blockSize)
	for left := size; left > 0; {
		n := int(min(left, blockSize))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return 0, nil, errShort
			}
			return 0, nil, err
		}
		if _, err := im.w.Write(buf[:n]); err != nil {
			return 0, nil, err
		}
		sizes = append(sizes, uint32(n)|uncompressed)
		im.off += int64(n)
		left -= int64(n)
	}
	return start, sizes, nil
}

// writer lays out the tree's metadata.
type writer struct {
	inodes, dirs, xattrKV, xattrIDs meta
	ids                             map[uint32]uint16
	idList                          []uint32
	xattrIdx                        map[string]uint32
	nxattr                          uint32
	count                           uint32
}

func (w *writer) id(v uint32) uint16 { return w.ids[v] }

// xattrIndex returns the index of a node's xattr set (invalid: none).
func (w *writer) xattrIndex(xs []xattr) (uint32, error) {
	if len(xs) == 0 {
		return math.MaxUint32, nil
	}
	var key bytes.Buffer
	for _, x := range xs {
		fmt.Fprintf(&key, "%d\x00%s\x00%x\x00", x.typ, x.name, x.value)
	}
	if i, ok := w.xattrIdx[key.String()]; ok {
		return i, nil
	}
	ref := w.xattrKV.ref()
	size := 0
	for _, x := range xs {
		if len(x.name) > math.MaxUint16 || len(x.value) > MaxXattrBytes {
			return 0, fmt.Errorf("extended attribute %q too large", x.name)
		}
		w.xattrKV.write(x.typ, uint16(len(x.name)))
		w.xattrKV.buf.WriteString(x.name)
		w.xattrKV.write(uint32(len(x.value)))
		w.xattrKV.buf.Write(x.value)
		size += len(prefixOf(x.typ)) + len(x.name) + 1 + len(x.value)
	}
	w.xattrIDs.write(ref, uint32(len(xs)), uint32(size))
	i := w.nxattr
	w.nxattr++
	w.xattrIdx[key.String()] = i
	return i, nil
}

func prefixOf(t uint16) string {
	return [...]string{"user.", "trusted.", "security."}[t]
}

// sortedNames returns a directory's entries in byte order.
func sortedNames(n *node) []string {
	names := make([]string, 0, len(n.children))
	for k := range n.children {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// number gives every inode its number: non-directories first, in a
// depth-first walk of sorted names (a hard link's node once), then
// directories in post-order, so the root is last.
func (w *writer) number(root *node) ([]*node, []*node) {
	var files, dirs []*node
	seen := map[*node]bool{}
	var walkFiles func(*node)
	walkFiles = func(d *node) {
		for _, name := range sortedNames(d) {
			c := d.children[name]
			if c.isDir() {
				walkFiles(c)
			} else if !seen[c] {
				seen[c] = true
				files = append(files, c)
			}
		}
	}
	var walkDirs func(*node)
	walkDirs = func(d *node) {
		for _, name := range sortedNames(d) {
			if c := d.children[name]; c.isDir() {
				walkDirs(c)
			}
		}
		dirs = append(dirs, d)
	}
	walkFiles(root)
	walkDirs(root)
	for _, n := range append(append([]*node{}, files...), dirs...) {
		w.count++
		n.number = w.count
	}
	return files, dirs
}

func (w *writer) header(n *node, typ uint16) {
	n.typ = typ
	n.ref = w.inodes.ref()
	w.inodes.write(typ, uint16(n.mode&0o7777), w.id(n.uid), w.id(n.gid), n.mtime, n.number)
}

// writeFile writes a non-directory inode.
func (w *writer) writeFile(n *node) error {
	xi, err := w.xattrIndex(n.xattrs)
	if err != nil {
		return err
	}
	hasX := xi != math.MaxUint32
	switch n.mode & sIFMT {
	case sIFREG:
		if !hasX && n.nlink == 1 && n.dataStart < math.MaxUint32 && n.size < math.MaxUint32 {
			w.header(n, typFile)
			w.inodes.write(uint32(n.dataStart), uint32(math.MaxUint32), uint32(0), uint32(n.size))
		} else {
			w.header(n, typLFile)
			w.inodes.write(uint64(n.dataStart), uint64(n.size), uint64(0), n.nlink, uint32(math.MaxUint32), uint32(0), xi)
		}
		w.inodes.write(n.blockSizes)
	case sIFLNK:
		if hasX {
			w.header(n, typLSymlink)
		} else {
			w.header(n, typSymlink)
		}
		w.inodes.write(n.nlink, uint32(len(n.target)))
		w.inodes.buf.WriteString(n.target)
		if hasX {
			w.inodes.write(xi)
		}
	case sIFCHR, sIFBLK:
		t := uint16(typChr)
		if n.mode&sIFMT == sIFBLK {
			t = typBlk
		}
		if hasX {
			w.header(n, t+7)
			w.inodes.write(n.nlink, n.rdev, xi)
		} else {
			w.header(n, t)
			w.inodes.write(n.nlink, n.rdev)
		}
	case sIFIFO:
		if hasX {
			w.header(n, typLFifo)
			w.inodes.write(n.nlink, xi)
		} else {
			w.header(n, typFifo)
			w.inodes.write(n.nlink)
		}
	default:
		return fmt.Errorf("inode mode %#o not supported", n.mode)
	}
	return nil
}

// basicType is the directory entry type of an inode (the basic type of
// its kind, whatever form the inode took).
func basicType(t uint16) uint16 {
	if t >= typLDir {
		return t - 7
	}
	return t
}

// writeDir writes a directory's listing, then its inode.
func (w *writer) writeDir(n, parent *node) error {
	xi, err := w.xattrIndex(n.xattrs)
	if err != nil {
		return err
	}
	start, offset := w.dirs.pos()
	before := w.dirs.buf.Len()
	names := sortedNames(n)
	subdirs := uint32(0)
	for i := 0; i < len(names); {
		// One header per run of entries whose inodes share a metadata
		// block, at most 256, with inode numbers within int16 of the base.
		first := n.children[names[i]]
		blk := uint32(first.ref >> 16)
		base := first.number
		j := i
		for j < len(names) && j-i < 256 {
			c := n.children[names[j]]
			d := int64(c.number) - int64(base)
			if uint32(c.ref>>16) != blk || d < math.MinInt16 || d > math.MaxInt16 {
				break
			}
			j++
		}
		w.dirs.write(uint32(j-i-1), blk, base)
		for _, name := range names[i:j] {
			c := n.children[name]
			w.dirs.write(uint16(c.ref&0xffff), int16(int64(c.number)-int64(base)), basicType(c.typ), uint16(len(name)-1))
			w.dirs.buf.WriteString(name)
			if c.isDir() {
				subdirs++
			}
		}
		i = j
	}
	listing := uint32(w.dirs.buf.Len()-before) + 3
	parentNum := w.count + 1
	if parent != nil {
		parentNum = parent.number
	}
	nlink := 2 + subdirs
	if xi == math.MaxUint32 && listing <= math.MaxUint16 {
		w.header(n, typDir)
		w.inodes.write(start, nlink, uint16(listing), offset, parentNum)
	} else {
		w.header(n, typLDir)
		w.inodes.write(nlink, listing, start, parentNum, uint16(0), offset, xi)
	}
	return nil
}

// write lays out the tree's metadata after the data blocks and writes the
// superblock. It returns the image's size (bytes used).
func (im *image) write(t *tree) (int64, error) {
	w := &writer{ids: map[uint32]uint16{}, xattrIdx: map[string]uint32{}}
	// The id table: every uid and gid, in ascending order.
	var walk func(*node)
	seen := map[uint32]bool{}
	walk = func(n *node) {
		seen[n.uid], seen[n.gid] = true, true
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(t.root)
	for v := range seen {
		w.idList = append(w.idList, v)
	}
	sort.Slice(w.idList, func(i, j int) bool { return w.idList[i] < w.idList[j] })
	if len(w.idList) > math.MaxUint16 {
		return 0, fmt.Errorf("%d distinct uids and gids, more than squashfs holds", len(w.idList))
	}
	for i, v := range w.idList {
		w.ids[v] = uint16(i)
	}
	files, dirs := w.number(t.root)
	for _, n := range files {
		if err := w.writeFile(n); err != nil {
			return 0, err
		}
	}
	parents := map[*node]*node{}
	var link func(*node)
	link = func(d *node) {
		for _, c := range d.children {
			if c.isDir() {
				parents[c] = d
				link(c)
			}
		}
	}
	link(t.root)
	for _, d := range dirs {
		if err := w.writeDir(d, parents[d]); err != nil {
			return 0, err
		}
	}
	rootRef := t.root.ref

	out := func(b []byte) (int64, error) {
		at := im.off
		if _, err := im.w.Write(b); err != nil {
			return 0, err
		}
		im.off += int64(len(b))
		return at, nil
	}
	inodeBytes, _ := w.inodes.blocks()
	inodeStart, err := out(inodeBytes)
	if err != nil {
		return 0, err
	}
	dirBytes, _ := w.dirs.blocks()
	dirStart, err := out(dirBytes)
	if err != nil {
		return 0, err
	}
	var ids meta
	for _, v := range w.idList {
		ids.write(v)
	}
	idBytes, idOffs := ids.blocks()
	idBlocks, err := out(idBytes)
	if err != nil {
		return 0, err
	}
	var idIndex bytes.Buffer
	for _, o := range idOffs {
		_ = binary.Write(&idIndex, binary.LittleEndian, uint64(idBlocks)+o)
	}
	idStart, err := out(idIndex.Bytes())
	if err != nil {
		return 0, err
	}
	xattrStart := uint64(invalidBlk)
	flags := uint16(flagUncompInodes | flagUncompData | flagUncompFrags | flagNoFragments | flagUncompIDs)
	if w.nxattr == 0 {
		flags |= flagNoXattrs
	} else {
		flags |= flagUncompXattrs
		kvBytes, _ := w.xattrKV.blocks()
		kvStart, err := out(kvBytes)
		if err != nil {
			return 0, err
		}
		xidBytes, xidOffs := w.xattrIDs.blocks()
		xidStart, err := out(xidBytes)
		if err != nil {
			return 0, err
		}
		var idx bytes.Buffer
		_ = binary.Write(&idx, binary.LittleEndian, uint64(kvStart))
		_ = binary.Write(&idx, binary.LittleEndian, w.nxattr)
		_ = binary.Write(&idx, binary.LittleEndian, uint32(0))
		for _, o := range xidOffs {
			_ = binary.Write(&idx, binary.LittleEndian, uint64(xidStart)+o)
		}
		at, err := out(idx.Bytes())
		if err != nil {
			return 0, err
		}
		xattrStart = uint64(at)
	}
	used := im.off
	var sb bytes.Buffer
	for _, v := range []any{
		uint32(0x73717368), w.count, uint32(0), uint32(blockSize), uint32(0),
		uint16(1), uint16(blockLog), flags, uint16(len(w.idList)), uint16(4), uint16(0),
		rootRef, uint64(used), uint64(idStart), xattrStart, uint64(inodeStart), uint64(dirStart),
		uint64(invalidBlk), uint64(invalidBlk),
	} {
		_ = binary.Write(&sb, binary.LittleEndian, v)
	}
	if sb.Len() != superSize {
		return 0, fmt.Errorf("superblock is %d bytes", sb.Len())
	}
	if _, err := im.w.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := im.w.Write(sb.Bytes()); err != nil {
		return 0, err
	}
	return used, nil
}

// Build writes the squashfs image of an uncompressed layer tar to w (a
// file at offset 0) and returns its size, padded to 4 KiB. The same tar
// gives the same bytes.
func Build(layer io.Reader, w io.WriteSeeker) (int64, error) {
	if _, err := w.Seek(superSize, io.SeekStart); err != nil {
		return 0, err
	}
	im := &image{w: w, off: superSize}
	t, err := readTree(layer, im.data)
	if err != nil {
		return 0, err
	}
	used, err := im.write(t)
	if err != nil {
		return 0, err
	}
	size := (used + 4095) &^ 4095
	if _, err := w.Seek(used, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := w.Write(make([]byte, size-used)); err != nil {
		return 0, err
	}
	return size, nil
}
