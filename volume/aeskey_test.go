package volume

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// TestExpandKeyFIPS197 checks the key schedule against FIPS-197's worked
// examples (Appendix A): the last round key of each key size.
func TestExpandKeyFIPS197(t *testing.T) {
	for _, tc := range []struct{ key, last string }{
		{"2b7e151628aed2a6abf7158809cf4f3c", "d014f9a8c9ee2589e13f0cc8b6630ca6"},
		{"8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", "e98ba06f448c773c8ecc720401002202"},
		{"603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "fe4890d1e6188d0b046df344706c631e"},
	} {
		key, _ := hex.DecodeString(tc.key)
		enc, dec := expandKey(key)
		nr := aesRounds(key)
		if len(enc) != nr+1 || len(dec) != nr+1 {
			t.Fatalf("%d-bit key: %d/%d round keys, want %d", 8*len(key), len(enc), len(dec), nr+1)
		}
		if got := hex.EncodeToString(enc[nr][:]); got != tc.last {
			t.Errorf("%d-bit key: last round key %s, want %s", 8*len(key), got, tc.last)
		}
		if !bytes.Equal(enc[0][:], key[:16]) || dec[0] != enc[nr] || dec[nr] != enc[0] {
			t.Errorf("%d-bit key: first or inverse round keys misplaced", 8*len(key))
		}
	}
}
