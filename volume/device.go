package volume

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Device is the plaintext view of a LUKS2 image's data segment: reads
// decrypt and writes encrypt whole sectors (read-modify-write for partial
// ones). It never writes plaintext to the image.
type Device struct {
	f backing
	// direct is a second, read-only descriptor on the image opened with
	// O_DIRECT: ciphertext goes from the disk into our buffer without a
	// copy through the page cache, and is not cached twice (the
	// filesystem above caches the plaintext). nil when the image's
	// filesystem refuses O_DIRECT; noDirect is set when a read does.
	direct   *os.File
	noDirect atomic.Bool
	key      []byte
	c        *xtsCipher
	offset   int64
	size     int64
	sector   int
	readOnly bool
	mu       sync.Mutex // serializes read-modify-write of partial sectors
}

// backing is where the ciphertext is: an *os.File (an image file or a
// block device) or an image read over HTTP(S) with range requests.
type backing interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
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
	fsize, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	d, err := newDevice(f, fsize, h, vk, readOnly)
	if err != nil {
		return nil, err
	}
	d.openDirect()
	return d, nil
}

// newDevice wraps the ciphertext b of fsize bytes with the volume key.
func newDevice(b backing, fsize int64, h *Header, vk []byte, readOnly bool) (*Device, error) {
	off, size, sector, err := h.DataSegment()
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
	return &Device{f: b, key: append([]byte{}, vk...), c: c, offset: off, size: size, sector: sector, readOnly: readOnly}, nil
}

// openDirect opens d.direct when the image is a regular file on a
// filesystem that takes O_DIRECT. Buffered writes on d.f stay coherent
// with direct reads: the kernel writes dirty pages back before a direct
// read of them.
func (d *Device) openDirect() {
	f, ok := d.f.(*os.File)
	if !ok {
		return
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return
	}
	df, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err == nil {
		d.direct = df
	}
}

// dioAlign is the alignment O_DIRECT reads use (of the buffer, the offset
// and the length): the largest logical block size disks have.
const dioAlign = 4096

// readCipher fills buf with the image's bytes at off (short at the end of
// the file), directly from the disk when buf and off allow it.
func (d *Device) readCipher(buf []byte, off int64) error {
	if d.direct != nil && !d.noDirect.Load() && len(buf) > 0 &&
		uintptr(unsafe.Pointer(&buf[0]))%dioAlign == 0 && off%dioAlign == 0 && len(buf)%dioAlign == 0 {
		_, err := d.direct.ReadAt(buf, off)
		if err == nil || errors.Is(err, io.EOF) {
			return nil
		}
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		d.noDirect.Store(true) // the filesystem refuses O_DIRECT after all
	}
	if _, err := d.f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Size is the plaintext size in bytes.
func (d *Device) Size() int64 { return d.size }

// ReadAt implements io.ReaderAt on plaintext.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	if off+int64(n) > d.size {
		n = int(d.size - off)
	}
	ss := int64(d.sector)
	first := off / ss * ss
	last := (off + int64(n) + ss - 1) / ss * ss
	// Whole sectors are read and decrypted in place; a partial one
	// through a scratch buffer.
	buf := p[:n]
	scratch := first != off || last != off+int64(n)
	if scratch {
		buf = getBuf(int(last - first))
		defer putBuf(buf)
	}
	if err := d.readCipher(buf, d.offset+first); err != nil {
		return 0, err
	}
	if err := xtsWith(d.c, buf, d.sector, uint64(first/512), true); err != nil {
		return 0, err
	}
	if scratch {
		copy(p, buf[off-first:off-first+int64(n)])
	}
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
	d.c.wipe()
	if d.direct != nil {
		d.direct.Close()
	}
	return d.f.Close()
}

var bufs = sync.Pool{New: func() any { b := alignedBuf(1 << 20)[:0]; return &b }}

// alignedBuf is a zeroed buffer of n bytes that starts on a dioAlign
// boundary, so that direct reads can fill it.
func alignedBuf(n int) []byte {
	b := make([]byte, n+dioAlign)
	a := int(-uintptr(unsafe.Pointer(&b[0])) & (dioAlign - 1))
	return b[a : a+n : a+n]
}

// getBuf returns a scratch buffer of n bytes; putBuf clears it (it held
// plaintext) and returns it to the pool.
func getBuf(n int) []byte {
	bp := bufs.Get().(*[]byte)
	if cap(*bp) < n {
		return alignedBuf(n)
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
