package volume

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	mrand "math/rand/v2"
	"testing"

	"golang.org/x/crypto/xts"
)

func BenchmarkXTSDecrypt1MiB(b *testing.B) {
	c, _ := newXTS(make([]byte, 64))
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		if err := xtsWith(c, buf, 4096, 0, true); err != nil {
			b.Fatal(err)
		}
	}
}

// TestXTSMatchesXCrypto cross-checks our XTS with golang.org/x/crypto/xts on
// random keys, sectors and data.
func TestXTSMatchesXCrypto(t *testing.T) {
	for i := 0; i < 50; i++ {
		key := make([]byte, 64)
		rand.Read(key)
		data := make([]byte, 4096)
		rand.Read(data)
		sector := mrand.Uint64()
		ref, _ := xts.NewCipher(aes.NewCipher, key)
		want := make([]byte, len(data))
		ref.Encrypt(want, data, sector)
		c, _ := newXTS(key)
		got := append([]byte{}, data...)
		c.crypt(got, sector, false, make([]byte, 4096))
		if !bytes.Equal(got, want) {
			t.Fatalf("encrypt differs (sector %d)", sector)
		}
		c.crypt(got, sector, true, make([]byte, 4096))
		if !bytes.Equal(got, data) {
			t.Fatal("decrypt does not invert")
		}
	}
}

// BenchmarkSequentialRead reads a volume in 1 MiB requests, as the FUSE
// file serves a sequential reader: from the device, and through the
// read-ahead.
func BenchmarkSequentialRead(b *testing.B) {
	for _, name := range []string{"device", "readahead"} {
		b.Run(name, func(b *testing.B) {
			d := testDevice(b, 64<<20)
			var r interface {
				ReadAt([]byte, int64) (int, error)
			} = d
			if name == "readahead" {
				x := newReadahead(d)
				defer x.Close()
				r = x
			}
			p := make([]byte, 1<<20)
			b.SetBytes(int64(len(p)))
			off := int64(0)
			for i := 0; i < b.N; i++ {
				if _, err := r.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
				if off += int64(len(p)); off >= d.Size() {
					off = 0
				}
			}
		})
	}
}
