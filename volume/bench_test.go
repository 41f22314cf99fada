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
// random keys, sectors and data, for every key size and for data units the
// AES-NI path takes (whole groups of eight blocks) and those it leaves to
// crypto/aes; and with AES-NI turned off.
func TestXTSMatchesXCrypto(t *testing.T) {
	for _, keySize := range []int{32, 48, 64} {
		for _, unit := range []int{16, 48, 128, 512, 4096} {
			for i := 0; i < 10; i++ {
				key := make([]byte, keySize)
				rand.Read(key)
				data := make([]byte, unit)
				rand.Read(data)
				sector := mrand.Uint64()
				ref, _ := xts.NewCipher(aes.NewCipher, key)
				want := make([]byte, len(data))
				ref.Encrypt(want, data, sector)
				c, _ := newXTS(key)
				slow := *c
				slow.ni = nil
				for name, c := range map[string]*xtsCipher{"default": c, "crypto/aes only": &slow} {
					got := append([]byte{}, data...)
					c.crypt(got, sector, false, make([]byte, unit))
					if !bytes.Equal(got, want) {
						t.Fatalf("%s: %d-bit key, %d-byte unit: encryption differs (sector %d)", name, 8*keySize, unit, sector)
					}
					c.crypt(got, sector, true, make([]byte, unit))
					if !bytes.Equal(got, data) {
						t.Fatalf("%s: %d-bit key, %d-byte unit: decryption does not invert", name, 8*keySize, unit)
					}
				}
			}
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

// FuzzXTSMatchesXCrypto: for any key, data unit and sector number, the
// AES-NI assembly and the crypto/aes fallback encrypt as x/crypto/xts does,
// and decryption inverts them.
func FuzzXTSMatchesXCrypto(f *testing.F) {
	f.Add(bytes.Repeat([]byte{1}, 64), bytes.Repeat([]byte{2}, 512), uint64(0))
	f.Add(bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 16), uint64(1<<63))
	f.Add(bytes.Repeat([]byte{5}, 48), bytes.Repeat([]byte{6}, 4096), uint64(12345))
	f.Fuzz(func(t *testing.T, key, data []byte, sector uint64) {
		switch len(key) {
		case 32, 48, 64:
		default:
			return
		}
		if n := len(data) / 16 * 16; n == 0 || n > 8192 {
			return
		} else {
			data = data[:n]
		}
		ref, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			return
		}
		want := make([]byte, len(data))
		ref.Encrypt(want, data, sector)
		c, err := newXTS(key)
		if err != nil {
			t.Fatalf("newXTS refused a key x/crypto/xts takes: %v", err)
		}
		slow := *c
		slow.ni = nil
		for name, c := range map[string]*xtsCipher{"default": c, "crypto/aes only": &slow} {
			got := append([]byte{}, data...)
			c.crypt(got, sector, false, make([]byte, len(data)))
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: %d-byte key, %d bytes, sector %d: encryption differs", name, len(key), len(data), sector)
			}
			c.crypt(got, sector, true, make([]byte, len(data)))
			if !bytes.Equal(got, data) {
				t.Fatalf("%s: decryption does not invert", name)
			}
		}
	})
}
