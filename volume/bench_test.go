package volume

import (
	"crypto/aes"
	"testing"

	"golang.org/x/crypto/xts"
)

func BenchmarkXTSDecrypt1MiB(b *testing.B) {
	c, _ := xts.NewCipher(aes.NewCipher, make([]byte, 64))
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		if err := xtsWith(c, buf, 4096, 0, true); err != nil {
			b.Fatal(err)
		}
	}
}
