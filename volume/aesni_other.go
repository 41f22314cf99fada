//go:build !amd64 || purego

package volume

// aesECB is AES-NI's block loop; without it (this build) newECB returns nil
// and crypto/aes runs block by block.
type aesECB struct{}

func newECB([]byte) *aesECB    { return nil }
func (*aesECB) encrypt([]byte) {}
func (*aesECB) decrypt([]byte) {}
func (*aesECB) wipe()          {}

func (*aesECB) xts([]byte, *[16]byte, bool) bool { return false }
