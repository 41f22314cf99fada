package volume

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Device is the plaintext view of a LUKS2 image's data segment: reads
// decrypt and writes encrypt whole sectors (read-modify-write for partial
// ones). It never writes plaintext to the image.
type Device struct {
	f        *os.File
	key      []byte
	c        *xtsCipher
	offset   int64
	size     int64
	sector   int
	readOnly bool
	mu       sync.Mutex // serializes read-modify-write of partial sectors
}

// ErrReadOnly marks a write to a read-only volume.
var ErrReadOnly = errors.New("the volume is read-only")

// Open unlocks the image at path with pass and returns its plaintext device.
func Open(path string, pass []byte, readOnly bool) (*Device, *Header, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, nil, err
	}
	h, err := ReadHeader(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	vk, err := h.Unlock(f, pass)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	d, err := NewDevice(f, h, vk, readOnly)
	clear(vk)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return d, h, nil
}

// NewDevice wraps f with the volume key (copied).
func NewDevice(f *os.File, h *Header, vk []byte, readOnly bool) (*Device, error) {
	off, size, sector, err := h.DataSegment()
	if err != nil {
		return nil, err
	}
	fsize, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		size = fsize - off
	}
	if off+size > fsize {
		return nil, fmt.Errorf("the image is truncated: data segment %d+%d bytes, file %d bytes", off, size, fsize)
	}
	size -= size % int64(sector)
	if size <= 0 {
		return nil, fmt.Errorf("the image is truncated: no whole %d-byte sector after the header (file %d bytes)", sector, fsize)
	}
	c, err := newXTS(vk)
	if err != nil {
		return nil, fmt.Errorf("aes-xts: %w", err)
	}
	return &Device{f: f, key: append([]byte{}, vk...), c: c, offset: off, size: size, sector: sector, readOnly: readOnly}, nil
}

// Size is the plaintext size in bytes.
func (d *Device) Size() int64 { return d.size }

// ReadAt implements io.ReaderAt on plaintext.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	if off+int64(n) > d.size {
		n = int(d.size - off)
	}
	ss := int64(d.sector)
	first := off / ss * ss
	last := (off + int64(n) + ss - 1) / ss * ss
	buf := getBuf(int(last - first))
	defer putBuf(buf)
	if _, err := d.f.ReadAt(buf, d.offset+first); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if err := xtsWith(d.c, buf, d.sector, uint64(first/512), true); err != nil {
		return 0, err
	}
	copy(p, buf[off-first:off-first+int64(n)])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements io.WriterAt on plaintext.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, ErrReadOnly
	}
	if off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("write past the end of the volume (%d bytes)", d.size)
	}
	ss := int64(d.sector)
	first := off / ss * ss
	last := (off + int64(len(p)) + ss - 1) / ss * ss
	buf := getBuf(int(last - first))
	defer putBuf(buf)
	partial := off != first || off+int64(len(p)) != last
	if partial {
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, err := d.ReadAt(buf, first); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	copy(buf[off-first:], p)
	if err := xtsWith(d.c, buf, d.sector, uint64(first/512), false); err != nil {
		return 0, err
	}
	if _, err := d.f.WriteAt(buf, d.offset+first); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync flushes the image.
func (d *Device) Sync() error { return d.f.Sync() }

// Close forgets the key and closes the image.
func (d *Device) Close() error {
	clear(d.key)
	return d.f.Close()
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

// getBuf returns a scratch buffer of n bytes; putBuf clears it (it held
// plaintext) and returns it to the pool.
func getBuf(n int) []byte {
	bp := bufs.Get().(*[]byte)
	if cap(*bp) < n {
		return make([]byte, n)
	}
	return (*bp)[:n]
}

func putBuf(b []byte) {
	clear(b)
	if cap(b) <= 1<<20 {
		b = b[:0]
		bufs.Put(&b)
	}
}

// fileSize is a regular file's size, or a block device's (which stat
// reports as 0): a VM sees its volume images as virtio disks.
func fileSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return st.Size(), nil
	}
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", f.Name(), err)
	}
	_, err = f.Seek(0, io.SeekStart)
	return n, err
}
