package imagecrypt_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/imagecrypt"
)

func FuzzParsePacket(f *testing.F) {
	kek := bytes.Repeat([]byte{7}, 32)
	good, err := imagecrypt.WrapPacket("kbs:///app/image/key", kek, []byte(`{"symkey":"AAAA"}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good + "," + good)
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"kid":"kbs:///a/b/c","wrapped_data":"","iv":"","wrap_type":"A256GCM"}`)))
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"version":"0.2.0","kid":"x"}`)))
	f.Add("!!")
	f.Fuzz(func(t *testing.T, ann string) {
		p, err := imagecrypt.ParsePacket(ann)
		if err != nil {
			return
		}
		// A parsed packet unwraps or refuses; never panics.
		if opts, err := p.Unwrap(kek); err == nil && len(opts) > imagecrypt.MaxOptsBytes {
			t.Fatalf("unwrapped %d bytes", len(opts))
		}
	})
}

// FuzzDecrypt: arbitrary options, public options and ciphertext are
// refused or decrypt; reading to the end never panics, and a stream that
// reaches EOF passed its HMAC.
func FuzzDecrypt(f *testing.F) {
	f.Add([]byte(`{"symkey":"`+base64.StdEncoding.EncodeToString(make([]byte, 32))+`","cipheroptions":{"nonce":"`+base64.StdEncoding.EncodeToString(make([]byte, 16))+`"}}`),
		base64.StdEncoding.EncodeToString([]byte(`{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AAAA"}`)), []byte("ciphertext"))
	f.Add([]byte(`{}`), "", []byte{})
	f.Add([]byte(`{"symkey":"AA=="}`), base64.StdEncoding.EncodeToString([]byte(`{"cipher":"other"}`)), []byte{1})
	f.Fuzz(func(t *testing.T, opts []byte, pub string, ct []byte) {
		d := v1.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", Annotations: map[string]string{imagecrypt.AnnotationPubOpts: pub}}
		r, err := imagecrypt.Decrypt(bytes.NewReader(ct), opts, d)
		if err != nil {
			return
		}
		io.Copy(io.Discard, r)
	})
}

func FuzzUnwrapJWE(f *testing.F) {
	f.Add("eyJwcm90ZWN0ZWQiOiJleUpoYkdjaU9pSlNVMEV0VDBGRlVDSXNJbVZ1WXlJNklrRXlOVFpIUTAwaWZRIn0=")
	f.Add("a,b,c")
	f.Add("")
	key := []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIA==\n-----END PRIVATE KEY-----\n")
	f.Fuzz(func(t *testing.T, ann string) {
		if _, err := imagecrypt.UnwrapJWE(ann, key); err == nil {
			t.Fatal("unwrapped with a key that is no recipient's")
		}
	})
}
