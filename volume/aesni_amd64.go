//go:build amd64 && !purego

package volume

import "golang.org/x/sys/cpu"

// aesECB runs AES over whole 16-byte blocks in place with AES-NI, eight
// blocks at a time so that the instructions pipeline (crypto/aes offers
// only one block per call, which leaves most of the AES unit idle).
type aesECB struct {
	nr       int
	enc, dec [15][16]byte
}

// newECB returns nil where the CPU has no AES instructions or the key is
// not an AES key; the caller then uses crypto/aes.
func newECB(key []byte) *aesECB {
	nr := aesRounds(key)
	if nr == 0 || !cpu.X86.HasAES {
		return nil
	}
	enc, dec := expandKey(key)
	e := &aesECB{nr: nr}
	copy(e.enc[:], enc)
	copy(e.dec[:], dec)
	clear(enc)
	clear(dec)
	return e
}

func (e *aesECB) encrypt(buf []byte) {
	if len(buf) >= 16 {
		ecbEncAsm(e.nr, &e.enc[0][0], buf)
	}
}

func (e *aesECB) decrypt(buf []byte) {
	if len(buf) >= 16 {
		ecbDecAsm(e.nr, &e.dec[0][0], buf)
	}
}

// xts en/decrypts one XTS data unit in place whose first tweak is t,
// when the unit is whole groups of eight blocks; it reports whether it did.
func (e *aesECB) xts(unit []byte, t *[16]byte, decrypt bool) bool {
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
func (e *aesECB) wipe() {
	clear(e.enc[:])
	clear(e.dec[:])
}

// ecbEncAsm encrypts the whole 16-byte blocks of buf in place with the nr+1
// round keys at xk.
//
//go:noescape
func ecbEncAsm(nr int, xk *byte, buf []byte)

// ecbDecAsm decrypts the whole 16-byte blocks of buf in place with the
// nr+1 inverse-cipher round keys at xk.
//
//go:noescape
func ecbDecAsm(nr int, xk *byte, buf []byte)

// xtsEncAsm and xtsDecAsm run XTS over buf (whole groups of eight blocks)
// in place, the first block's tweak being tweak.
//
//go:noescape
func xtsEncAsm(nr int, xk *byte, buf []byte, tweak *[16]byte)

//go:noescape
func xtsDecAsm(nr int, xk *byte, buf []byte, tweak *[16]byte)
