//go:build !amd64 || purego

package volume

// aesNI is the AES-NI data-unit cipher; without it (this build) newAESNI
// returns nil and crypto/aes runs block by block.
type aesNI struct{}

func newAESNI([]byte) *aesNI                    { return nil }
func (*aesNI) xts([]byte, *[16]byte, bool) bool { return false }
func (*aesNI) wipe()                            {}
