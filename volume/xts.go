package volume

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// xtsCipher is AES-XTS (IEEE 1619) for whole data units: all tweaks of a
// unit are computed first, so the two XORs run over the whole unit at once
// (vectorized), and only the block cipher is applied block by block.
type xtsCipher struct {
	k1, k2 cipher.Block
	// ecb is k1 as an AES-NI block loop (nil without AES instructions).
	ecb *aesECB
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
	return &xtsCipher{k1: k1, k2: k2, ecb: newECB(key[:len(key)/2])}, nil
}

// wipe clears the AES-NI round keys (crypto/aes keeps its own copy of
// the schedule, which it does not let us clear).
func (x *xtsCipher) wipe() {
	if x.ecb != nil {
		x.ecb.wipe()
	}
}

// tweaks fills t (len(unit)) with the tweak of each 16-byte block.
func (x *xtsCipher) tweaks(t []byte, sector uint64) {
	var iv [16]byte
	binary.LittleEndian.PutUint64(iv[:8], sector)
	x.k2.Encrypt(iv[:], iv[:])
	lo, hi := binary.LittleEndian.Uint64(iv[:8]), binary.LittleEndian.Uint64(iv[8:])
	for i := 0; i < len(t); i += 16 {
		binary.LittleEndian.PutUint64(t[i:], lo)
		binary.LittleEndian.PutUint64(t[i+8:], hi)
		// Multiply by alpha in GF(2^128), little-endian.
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
}

// crypt en/decrypts one data unit in place (len a multiple of 16).
func (x *xtsCipher) crypt(unit []byte, sector uint64, decrypt bool, t []byte) {
	if x.ecb != nil {
		var iv [16]byte
		binary.LittleEndian.PutUint64(iv[:8], sector)
		x.k2.Encrypt(iv[:], iv[:])
		done := x.ecb.xts(unit, &iv, decrypt)
		clear(iv[:])
		if done {
			return
		}
	}
	t = t[:len(unit)]
	x.tweaks(t, sector)
	subtle.XORBytes(unit, unit, t)
	switch {
	case x.ecb != nil && decrypt:
		x.ecb.decrypt(unit)
	case x.ecb != nil:
		x.ecb.encrypt(unit)
	case decrypt:
		for i := 0; i < len(unit); i += 16 {
			x.k1.Decrypt(unit[i:i+16], unit[i:i+16])
		}
	default:
		for i := 0; i < len(unit); i += 16 {
			x.k1.Encrypt(unit[i:i+16], unit[i:i+16])
		}
	}
	subtle.XORBytes(unit, unit, t)
}
