package volume

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"io"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	xhkdf "golang.org/x/crypto/hkdf"
)

// TestEncfsPassphrase: the passphrase is what Azure's encrypted-filesystem
// sidecar writes to its key file: an oct key's bytes, or HKDF-SHA256 over
// an RSA key's D with the salt and label (computed here independently with
// x/crypto's HKDF, as the sidecar does).
func TestEncfsPassphrase(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, _ := jose.JSONWebKey{Key: rk}.MarshalJSON()
	oct := bytes.Repeat([]byte{7}, 32)
	octJWK, _ := jose.JSONWebKey{Key: oct}.MarshalJSON()
	derive := func(salt []byte, label string) []byte {
		out := make([]byte, 32)
		io.ReadFull(xhkdf.New(sha256.New, rk.D.Bytes(), salt, []byte(label)), out)
		return out
	}
	cases := []struct {
		name, uri string
		res       []byte
		want      []byte
		err       string
	}{
		{"plain resource", "kbs:///demo/volume/key", []byte("passphrase"), []byte("passphrase"), ""},
		{"oct", "kbs:///keyvault/keys/k?kdf=azure-encfs", octJWK, oct, ""},
		{"rsa, salt and label", "kbs:///keyvault/keys/k?kdf=azure-encfs&salt=0011ff&label=My+Label", rsaJWK, derive([]byte{0, 0x11, 0xff}, "My Label"), ""},
		{"rsa, default label", "kbs:///keyvault/keys/k?kdf=azure-encfs&salt=", rsaJWK, derive(nil, "Symmetric Encryption Key"), ""},
		{"rsa public", "kbs:///keyvault/keys/k?kdf=azure-encfs", func() []byte { b, _ := jose.JSONWebKey{Key: &rk.PublicKey}.MarshalJSON(); return b }(), nil, "public key"},
		{"short oct", "kbs:///keyvault/keys/k?kdf=azure-encfs", func() []byte { b, _ := jose.JSONWebKey{Key: oct[:16]}.MarshalJSON(); return b }(), nil, "32 bytes"},
		{"not a JWK", "kbs:///keyvault/keys/k?kdf=azure-encfs", []byte("raw"), nil, "not a JWK"},
	}
	for _, tc := range cases {
		ks, err := ParseKeyURI(tc.uri)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := ks.Passphrase(tc.res)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %x %v, want %x", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range []string{"http://x/k", "kbs:///a/b/c?kdf=pbkdf2", "kbs:///a/b/c?salt=zz&kdf=azure-encfs", "kbs:///a/b/c?salt=00", "kbs:///a/b/c?kdf=azure-encfs&other=1", "kbs:///a/b/c?kdf=azure-encfs&kdf=azure-encfs"} {
		if _, err := ParseKeyURI(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseKeyURI(f *testing.F) {
	f.Add("kbs:///keyvault/keys/k?kdf=azure-encfs&salt=00ff&label=x")
	f.Add("kbs:///a/b/c")
	f.Fuzz(func(t *testing.T, uri string) {
		ks, err := ParseKeyURI(uri)
		if err == nil && (!strings.HasPrefix(ks.Resource, "kbs:///") || strings.Contains(ks.Resource, "?")) {
			t.Fatalf("%q gave resource %q", uri, ks.Resource)
		}
	})
}
