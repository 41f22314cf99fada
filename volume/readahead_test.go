package volume

import (
	"bytes"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
)

func testDevice(t testing.TB, size int64) *Device {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "vol")
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	t.Cleanup(func() { f.Close() })
	key := make([]byte, 64)
	for i := range key {
		key[i] = byte(i)
	}
	c, _ := newXTS(key)
	d := &Device{f: f, key: key, c: c, size: size, sector: 4096}
	d.openDirect()
	t.Cleanup(func() {
		if d.direct != nil {
			d.direct.Close()
		}
	})
	return d
}

// TestDeviceDirectReads: reads take the O_DIRECT path when the buffer and
// offset are aligned (and the buffered one otherwise), and both see what
// was just written through the page cache, without a sync.
func TestDeviceDirectReads(t *testing.T) {
	const size = 4 << 20
	d := testDevice(t, size)
	if d.direct == nil {
		t.Fatalf("no O_DIRECT descriptor on %s: its filesystem should take O_DIRECT", d.f.(*os.File).Name())
	}
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>12)
	}
	if _, err := d.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		off, n   int
		misalign int
	}{
		{"aligned, whole", 0, size, 0},
		{"aligned chunk", 1 << 20, 1 << 20, 0},
		{"unaligned buffer", 8192, 65536, 1},
		{"partial sectors", 1000, 10000, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := alignedBuf(tc.n + tc.misalign)[tc.misalign:]
			if _, err := d.ReadAt(buf, int64(tc.off)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, want[tc.off:tc.off+tc.n]) {
				t.Fatal("read differs from what was written")
			}
		})
	}
	if d.noDirect.Load() {
		t.Fatal("the direct path was given up: a direct read failed with EINVAL")
	}
	// Overwrite one sector; an aligned read sees it at once.
	sector := bytes.Repeat([]byte{0xA5}, 4096)
	if _, err := d.WriteAt(sector, 8192); err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(4096)
	if _, err := d.ReadAt(buf, 8192); err != nil || !bytes.Equal(buf, sector) {
		t.Fatalf("direct read after a buffered write: err %v, equal %v", err, bytes.Equal(buf, sector))
	}
}

// TestReadaheadMatchesDevice: sequential, unaligned and random reads through
// the read-ahead return what the device returns, also after writes that
// land on chunks already fetched, with readers and writers concurrent.
func TestReadaheadMatchesDevice(t *testing.T) {
	const size = 8 << 20
	d := testDevice(t, size)
	ra := newReadahead(d)
	defer ra.Close()
	// Known content: a pattern written through the read-ahead.
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	if _, err := ra.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	check := func(off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		got, _ := ra.ReadAt(p, off)
		exp := want[off:min(off+int64(n), size)]
		if got != len(exp) || !bytes.Equal(p[:got], exp) {
			t.Fatalf("read %d@%d: got %d bytes, content differs", n, off, got)
		}
	}
	for off := int64(0); off < size; off += 1 << 20 { // sequential: fetches ahead
		check(off, 1<<20)
	}
	for off := int64(0); off < size; off += 300 << 10 { // unaligned, spanning chunks
		check(off, 300<<10)
	}
	// Overwrite a chunk the sequential reader has fetched ahead.
	check(0, 1<<20)
	patch := bytes.Repeat([]byte{0xee}, 8192)
	copy(want[(1<<20)+4096:], patch)
	if _, err := ra.WriteAt(patch, (1<<20)+4096); err != nil {
		t.Fatal(err)
	}
	check(1<<20, 1<<20)
	check(size-100, 4096) // the end: a short read
	// Concurrent readers and a writer (run with -race).
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			p := make([]byte, 1<<20)
			for i := 0; i < 50; i++ {
				off := r.Int64N(size-(1<<20)) &^ 4095
				mu.Lock() // the writer below changes want; reads compare under it
				n, _ := ra.ReadAt(p, off)
				ok := bytes.Equal(p[:n], want[off:off+int64(n)])
				mu.Unlock()
				if !ok {
					t.Errorf("concurrent read at %d differs", off)
					return
				}
			}
		}(uint64(g))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			mu.Lock()
			off := int64(i) * 4096 * 37 % (size - 4096)
			off &^= 4095
			b := bytes.Repeat([]byte{byte(i)}, 4096)
			copy(want[off:], b)
			_, err := ra.WriteAt(b, off)
			mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
}
