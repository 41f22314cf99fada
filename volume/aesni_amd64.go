//go:build amd64 && !purego

package volume

import "golang.org/x/sys/cpu"

// aesNI is AES-XTS's data-unit cipher with AES-NI, eight blocks at a time
// so that the instructions pipeline (crypto/aes offers only one block per
// call, which leaves most of the AES unit idle).
type aesNI struct {
	nr       int
	enc, dec [15][16]byte
}

// newAESNI returns nil where the CPU has no AES instructions or the key is
// not an AES key; the caller then uses crypto/aes.
func newAESNI(key []byte) *aesNI {
	nr := aesRounds(key)
	if nr == 0 || !cpu.X86.HasAES {
		return nil
	}
	enc, dec := expandKey(key)
	e := &aesNI{nr: nr}
	copy(e.enc[:], enc)
	copy(e.dec[:], dec)
	clear(enc)
	clear(dec)
	return e
}

// xts en/decrypts one XTS data unit in place whose first tweak is t,
// when the unit is whole groups of eight blocks; it reports whether it did.
func (e *aesNI) xts(unit []byte, t *[16]byte, decrypt bool) bool {
	if len(unit) == 0 || len(unit)%128 != 0 {
		return false
	}
	if decrypt {
		xtsDecAsm(e.nr, &e.dec[0][0], unit, t)
	} else {
		xtsEncAsm(e.nr, &e.enc[0][0], unit, t)
	}
	return true
}

// wipe clears the round keys.
func (e *aesNI) wipe() {
	clear(e.enc[:])
	clear(e.dec[:])
}

// xtsEncAsm and xtsDecAsm run XTS over buf (whole groups of eight blocks)
// in place, the first block's tweak being tweak.
//
//go:noescape
func xtsEncAsm(nr int, xk *byte, buf []byte, tweak *[16]byte)

//go:noescape
func xtsDecAsm(nr int, xk *byte, buf []byte, tweak *[16]byte)
