package volume

import (
	"io"
	"sync"
)

// Read-ahead of decrypted chunks for sequential readers: while the kernel
// consumes one reply, the next chunks are read and decrypted, so a FUSE
// round trip does not wait for the disk and AES.
const (
	raChunk = 1 << 20 // bytes per chunk
	raDepth = 4       // chunks fetched ahead of a sequential reader
)

type chunk struct {
	done chan struct{}
	buf  []byte
	n    int
	err  error
	// refs counts readers copying from buf; evicted marks a chunk taken
	// out of the map. Both are guarded by readahead.mu; the buffer
	// (plaintext) is cleared and freed when neither needs it.
	refs    int
	evicted bool
}

// readahead wraps a Device for the FUSE file.
type readahead struct {
	dev *Device
	// wmu orders fetches (readers) against writes: a write waits for the
	// fetches in flight, then drops the chunks it overlaps.
	wmu    sync.RWMutex
	mu     sync.Mutex
	chunks map[int64]*chunk
	next   int64 // where a sequential reader reads next
}

func newReadahead(d *Device) *readahead {
	return &readahead{dev: d, chunks: map[int64]*chunk{}}
}

// ReadAt serves p from fetched chunks when all it needs is there (or on its
// way), else from the device; a sequential reader starts the next fetches.
func (r *readahead) ReadAt(p []byte, off int64) (int, error) {
	data, release, err := r.view(p, off)
	n := copy(p, data)
	release()
	return n, err
}

// view is ReadAt without the last copy when one fetched chunk holds the
// whole range: data is then a slice of that chunk's buffer, valid until
// release is called; otherwise data is p[:n]. release must be called.
func (r *readahead) view(p []byte, off int64) (data []byte, release func(), err error) {
	size := r.dev.Size()
	nop := func() {}
	if off < 0 || off >= size || len(p) == 0 {
		n, err := r.dev.ReadAt(p, off)
		return p[:n], nop, err
	}
	end := min(off+int64(len(p)), size)
	a, b := off/raChunk, (end-1)/raChunk
	r.mu.Lock()
	seq := off == r.next
	r.next = end
	cs := make([]*chunk, 0, b-a+1)
	for i := a; i <= b; i++ {
		if c := r.chunks[i]; c != nil {
			c.refs++
			cs = append(cs, c)
		}
	}
	for i, c := range r.chunks {
		if i < a { // behind the reader
			r.evict(i, c)
		}
	}
	if seq {
		for i := b + 1; i <= b+raDepth && i*raChunk < size; i++ {
			if r.chunks[i] == nil {
				r.chunks[i] = r.fetch(i)
			}
		}
	}
	r.mu.Unlock()
	fromDevice := func() ([]byte, func(), error) {
		r.unref(cs)
		n, err := r.dev.ReadAt(p, off)
		return p[:n], nop, err
	}
	if len(cs) != int(b-a+1) {
		return fromDevice()
	}
	for _, c := range cs {
		<-c.done
		if c.err != nil && c.n == 0 {
			return fromDevice()
		}
	}
	if len(cs) == 1 {
		c := cs[0]
		from, to := off-a*raChunk, min(end-a*raChunk, int64(c.n))
		if to >= from {
			var err error
			if to-from < int64(len(p)) {
				err = io.EOF
			}
			return c.buf[from:to], func() { r.unref(cs) }, err
		}
	}
	n := 0
	for k, c := range cs {
		cstart := (a + int64(k)) * raChunk
		from, to := max(off, cstart)-cstart, min(end, cstart+int64(c.n))-cstart
		if to > from {
			n += copy(p[n:], c.buf[from:to])
		}
	}
	r.unref(cs)
	if n < len(p) {
		return p[:n], nop, io.EOF
	}
	return p[:n], nop, nil
}

// fetch starts reading and decrypting chunk i; the caller holds r.mu.
func (r *readahead) fetch(i int64) *chunk {
	c := &chunk{done: make(chan struct{}), buf: getBuf(raChunk)}
	go func() {
		r.wmu.RLock()
		c.n, c.err = r.dev.ReadAt(c.buf, i*raChunk)
		r.wmu.RUnlock()
		close(c.done)
	}()
	return c
}

func (r *readahead) unref(cs []*chunk) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		c.refs--
		if c.evicted && c.refs == 0 {
			free(c)
		}
	}
}

// evict takes chunk i out of the map; the caller holds r.mu.
func (r *readahead) evict(i int64, c *chunk) {
	delete(r.chunks, i)
	c.evicted = true
	if c.refs == 0 {
		free(c)
	}
}

// free clears and returns a chunk's buffer once its fetch has ended.
func free(c *chunk) {
	go func() {
		<-c.done
		putBuf(c.buf)
	}()
}

// WriteAt writes through to the device and drops the chunks it overlaps.
func (r *readahead) WriteAt(p []byte, off int64) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if len(p) > 0 {
		r.mu.Lock()
		for i := off / raChunk; i <= (off+int64(len(p))-1)/raChunk; i++ {
			if c := r.chunks[i]; c != nil {
				r.evict(i, c)
			}
		}
		r.mu.Unlock()
	}
	return r.dev.WriteAt(p, off)
}

// Close drops every chunk.
func (r *readahead) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.chunks {
		r.evict(i, c)
	}
}
