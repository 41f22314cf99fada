package guest

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// entry is one file of the initramfs.
type entry struct {
	path string // no leading slash
	mode uint32 // type bits | permissions
	data []byte // regular file contents
	link string // symlink target
	src  string // regular file: copied from this host path when data is nil
	size int64
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

// cpioWriter writes a "newc" cpio archive with fixed metadata: every entry
// is owned by root, has mtime 0 and sequential inode numbers, and entries
// are written in path order, so the same inputs give the same bytes.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	n   int64
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.n % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

func (c *cpioWriter) header(name string, mode uint32, size int64, rdev uint32) error {
	c.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev>>8, rdev&0xff, len(name)+1, 0)
	if err := c.write([]byte(h)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

// add writes one entry; r supplies a regular file's size bytes.
func (c *cpioWriter) add(e entry, r io.Reader) error {
	switch e.mode & 0o170000 {
	case modeSymlink:
		if err := c.header(e.path, e.mode, int64(len(e.link)), 0); err != nil {
			return err
		}
		if err := c.write([]byte(e.link)); err != nil {
			return err
		}
	case modeFile:
		if err := c.header(e.path, e.mode, e.size, 0); err != nil {
			return err
		}
		n, err := io.Copy(c.w, io.LimitReader(r, e.size))
		c.n += n
		if err != nil {
			return err
		}
		if n != e.size {
			return fmt.Errorf("%s changed while it was read (%d of %d bytes)", e.path, n, e.size)
		}
	case modeChar:
		// /dev/console: 5:1, so the kernel can give init a console before
		// devtmpfs is mounted.
		if err := c.header(e.path, e.mode, 0, 5<<8|1); err != nil {
			return err
		}
	default:
		if err := c.header(e.path, e.mode, 0, 0); err != nil {
			return err
		}
	}
	return c.pad()
}

func (c *cpioWriter) close() error {
	c.ino = 0
	return c.header("TRAILER!!!", 0, 0, 0)
}

// sortEntries orders entries by path and adds the parent directories any
// entry lacks.
func sortEntries(es []entry) []entry {
	have := map[string]bool{}
	for _, e := range es {
		have[e.path] = true
	}
	for _, e := range es {
		p := e.path
		for {
			i := strings.LastIndexByte(p, '/')
			if i < 0 {
				break
			}
			p = p[:i]
			if !have[p] {
				have[p] = true
				es = append(es, entry{path: p, mode: modeDir | 0o755})
			}
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].path < es[j].path })
	return es
}
