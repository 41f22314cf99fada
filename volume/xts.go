package volume

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// xtsCipher is AES-XTS (IEEE 1619) for whole data units. With AES-NI a
// unit of whole eight-block groups (every LUKS2 sector) runs in one
// assembly loop; otherwise all tweaks of the unit are computed first, so
// the two XORs run over the whole unit at once (vectorized), and crypto/aes
// is applied block by block.
type xtsCipher struct {
	k1, k2 cipher.Block
	// ni is k1 with AES-NI (nil without AES instructions).
	ni *aesNI
}

func newXTS(key []byte) (*xtsCipher, error) {
	if len(key) != 32 && len(key) != 48 && len(key) != 64 {
		return nil, errors.New("aes-xts needs a 256-, 384- or 512-bit key")
	}
	k1, err := aes.NewCipher(key[:len(key)/2])
	if err != nil {
		return nil, err
	}
	k2, err := aes.NewCipher(key[len(key)/2:])
	if err != nil {
		return nil, err
	}
	return &xtsCipher{k1: k1, k2: k2, ni: newAESNI(key[:len(key)/2])}, nil
}

// wipe clears the AES-NI round keys (crypto/aes keeps its own copy of
// the schedule, which it does not let us clear).
func (x *xtsCipher) wipe() {
	if x.ni != nil {
		x.ni.wipe()
	}
}

// tweaks fills t with the tweak of each 16-byte block, the first being t0.
func tweaks(t []byte, t0 *[16]byte) {
	lo, hi := binary.LittleEndian.Uint64(t0[:8]), binary.LittleEndian.Uint64(t0[8:])
	for i := 0; i < len(t); i += 16 {
		binary.LittleEndian.PutUint64(t[i:], lo)
		binary.LittleEndian.PutUint64(t[i+8:], hi)
		// Multiply by alpha in GF(2^128), little-endian.
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
}

// crypt en/decrypts one data unit in place (len a multiple of 16); t is
// scratch for the tweaks, at least len(unit) long.
func (x *xtsCipher) crypt(unit []byte, sector uint64, decrypt bool, t []byte) {
	var t0 [16]byte // the encrypted IV: the first block's tweak
	binary.LittleEndian.PutUint64(t0[:8], sector)
	x.k2.Encrypt(t0[:], t0[:])
	defer clear(t0[:])
	if x.ni != nil && x.ni.xts(unit, &t0, decrypt) {
		return
	}
	t = t[:len(unit)]
	tweaks(t, &t0)
	subtle.XORBytes(unit, unit, t)
	if decrypt {
		for i := 0; i < len(unit); i += 16 {
			x.k1.Decrypt(unit[i:i+16], unit[i:i+16])
		}
	} else {
		for i := 0; i < len(unit); i += 16 {
			x.k1.Encrypt(unit[i:i+16], unit[i:i+16])
		}
	}
	subtle.XORBytes(unit, unit, t)
}
