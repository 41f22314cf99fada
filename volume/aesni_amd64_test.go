//go:build amd64 && !purego

package volume

import (
	"testing"

	"golang.org/x/sys/cpu"
)

// TestAESNIUsed: on a CPU with AES-NI, XTS takes the assembly path for
// every AES key size, so TestXTSMatchesXCrypto checks it, not only
// crypto/aes.
func TestAESNIUsed(t *testing.T) {
	if !cpu.X86.HasAES {
		t.Skip("this CPU has no AES-NI: only the crypto/aes path runs here")
	}
	for _, n := range []int{32, 48, 64} {
		c, err := newXTS(make([]byte, n))
		if err != nil || c.ni == nil {
			t.Fatalf("%d-byte XTS key: AES-NI path not set up (%v)", n, err)
		}
		if !c.ni.xts(make([]byte, 4096), new([16]byte), true) {
			t.Fatal("a 4096-byte unit did not take the AES-NI path")
		}
		if c.ni.xts(make([]byte, 48), new([16]byte), true) {
			t.Fatal("a 48-byte unit took the eight-block AES-NI path")
		}
	}
}
