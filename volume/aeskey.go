package volume

// AES key expansion (FIPS-197 §5.2) for the AES-NI block loops, which take
// round keys as bytes in the order the instructions use them. Keys are
// secret, so the field arithmetic is branch-free and table-free: the S-box
// is computed (inversion in GF(2^8), then the affine map) rather than
// looked up, and nothing depends on a key byte's value but data.

// gfMul multiplies in GF(2^8) modulo x^8+x^4+x^3+x+1, in constant time.
func gfMul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		hi := -(a >> 7)
		a = a<<1 ^ hi&0x1b
		b >>= 1
	}
	return p
}

// sbox is the AES S-box of b: its inverse (b^254; 0 for 0), then the
// affine transformation.
func sbox(b byte) byte {
	// b^254 = b^(2+4+8+16+32+64+128).
	x, inv := b, byte(1)
	for range 7 {
		x = gfMul(x, x)
		inv = gfMul(inv, x)
	}
	rotl := func(v byte, n uint) byte { return v<<n | v>>(8-n) }
	return inv ^ rotl(inv, 1) ^ rotl(inv, 2) ^ rotl(inv, 3) ^ rotl(inv, 4) ^ 0x63
}

// aesRounds is the round count for a 16-, 24- or 32-byte key (else 0).
func aesRounds(key []byte) int {
	switch len(key) {
	case 16, 24, 32:
		return len(key)/4 + 6
	}
	return 0
}

// expandKey returns the nr+1 encryption round keys of key, and the nr+1
// round keys of the equivalent inverse cipher in the order decryption uses
// them (the last encryption key first; the middle ones through
// InvMixColumns), as AESDEC wants.
func expandKey(key []byte) (enc, dec [][16]byte) {
	nk := len(key) / 4
	nr := aesRounds(key)
	w := make([][4]byte, 4*(nr+1))
	for i := range nk {
		copy(w[i][:], key[4*i:])
	}
	rcon := byte(1)
	for i := nk; i < len(w); i++ {
		t := w[i-1]
		switch {
		case i%nk == 0:
			t = [4]byte{sbox(t[1]) ^ rcon, sbox(t[2]), sbox(t[3]), sbox(t[0])}
			rcon = gfMul(rcon, 2)
		case nk > 6 && i%nk == 4:
			t = [4]byte{sbox(t[0]), sbox(t[1]), sbox(t[2]), sbox(t[3])}
		}
		for j := range 4 {
			w[i][j] = w[i-nk][j] ^ t[j]
		}
	}
	enc = make([][16]byte, nr+1)
	for r := range enc {
		for c := range 4 {
			copy(enc[r][4*c:], w[4*r+c][:])
		}
	}
	dec = make([][16]byte, nr+1)
	dec[0], dec[nr] = enc[nr], enc[0]
	for r := 1; r < nr; r++ {
		dec[r] = invMixColumns(enc[nr-r])
	}
	clear(w)
	return enc, dec
}

// invMixColumns applies AES's InvMixColumns to a round key.
func invMixColumns(k [16]byte) [16]byte {
	var o [16]byte
	for c := 0; c < 16; c += 4 {
		a0, a1, a2, a3 := k[c], k[c+1], k[c+2], k[c+3]
		o[c] = gfMul(a0, 14) ^ gfMul(a1, 11) ^ gfMul(a2, 13) ^ gfMul(a3, 9)
		o[c+1] = gfMul(a0, 9) ^ gfMul(a1, 14) ^ gfMul(a2, 11) ^ gfMul(a3, 13)
		o[c+2] = gfMul(a0, 13) ^ gfMul(a1, 9) ^ gfMul(a2, 14) ^ gfMul(a3, 11)
		o[c+3] = gfMul(a0, 11) ^ gfMul(a1, 13) ^ gfMul(a2, 9) ^ gfMul(a3, 14)
	}
	return o
}
