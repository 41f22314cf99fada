package imagecrypt_test

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"cocoon.dev/cocoon/imagecrypt"
	"cocoon.dev/cocoon/internal/testimage"
)

func needSkopeo(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("skopeo is missing: scripts/deps.sh --test installs it")
		}
		t.Skip("needs skopeo (scripts/deps.sh --test)")
	}
}

func skopeo(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("skopeo", append([]string{"--insecure-policy"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
}

// rsaKeys writes an RSA key pair (PEM) and returns the files.
func rsaKeys(t *testing.T) (priv, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	return priv, pub
}

// marker is a file whose content says it is plaintext.
const marker = "PLAINTEXT-MARKER-of-an-encrypted-layer"

func pushPlain(t *testing.T, reg *testimage.Registry, repoTag string) (v1.Image, string) {
	t.Helper()
	l, err := testimage.Layer([]testimage.File{{Path: "/secret.txt", Data: []byte(marker), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Busybox(l)
	if err != nil {
		t.Fatal(err)
	}
	tagged, _, err := reg.Push(repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	return img, tagged
}

// decryptAll decrypts every layer of ref with unwrap and checks each
// against the config's diff_ids; it returns the plaintext tars joined.
func decryptAll(t *testing.T, ref string, unwrap func(v1.Descriptor) ([]byte, error)) []byte {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	cf, _ := img.ConfigFile()
	layers, _ := img.Layers()
	var all []byte
	for i, l := range layers {
		d := m.Layers[i]
		if !imagecrypt.Encrypted(d) {
			t.Fatalf("layer %d is %s, not encrypted", i, d.MediaType)
		}
		opts, err := unwrap(d)
		if err != nil {
			t.Fatalf("layer %d: unwrap: %v", i, err)
		}
		rc, _ := l.Compressed()
		pr, err := imagecrypt.Decrypt(rc, opts, d)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(pr)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		tarb, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		sum := sha256.Sum256(tarb)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != cf.RootFS.DiffIDs[i].String() {
			t.Fatalf("layer %d decrypts to %s, the config says %s", i, got, cf.RootFS.DiffIDs[i])
		}
		all = append(all, tarb...)
	}
	return all
}

// TestSkopeoEncryptsCocoonDecrypts: an image encrypted by skopeo for a JWE
// recipient decrypts here with the private key, each layer to its diff_id.
func TestSkopeoEncryptsCocoonDecrypts(t *testing.T) {
	needSkopeo(t)
	reg := testimage.NewRegistry()
	defer reg.Close()
	_, tagged := pushPlain(t, reg, "app:1")
	priv, pub := rsaKeys(t)
	enc := reg.Host() + "/app:enc"
	skopeo(t, "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pub, "docker://"+tagged, "docker://"+enc)
	key, _ := os.ReadFile(priv)
	plain := decryptAll(t, enc, func(d v1.Descriptor) ([]byte, error) {
		return imagecrypt.UnwrapJWE(d.Annotations[imagecrypt.AnnotationJWE], key)
	})
	if !bytes.Contains(plain, []byte(marker)) {
		t.Fatal("the decrypted layers lack the marker")
	}
	// Another private key opens nothing.
	other, _ := rsaKeys(t)
	ok, _ := os.ReadFile(other)
	r, _ := name.ParseReference(enc)
	img, _ := remote.Image(r)
	m, _ := img.Manifest()
	if _, err := imagecrypt.UnwrapJWE(m.Layers[0].Annotations[imagecrypt.AnnotationJWE], ok); err == nil {
		t.Fatal("another private key unwraps the layer key")
	}
}

// TestCocoonEncryptsSkopeoDecrypts: cocoon's own encryption (broker key and
// JWE recipient) decrypts with skopeo --decryption-key to the original
// layers, and with the broker's key here.
func TestCocoonEncryptsSkopeoDecrypts(t *testing.T) {
	needSkopeo(t)
	reg := testimage.NewRegistry()
	defer reg.Close()
	orig, tagged := pushPlain(t, reg, "app:1")
	priv, pub := rsaKeys(t)
	pubB, _ := os.ReadFile(pub)
	kek := make([]byte, 32)
	rand.Read(kek)
	r, _ := name.ParseReference(tagged)
	src, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	enc, err := imagecrypt.EncryptImage(src, imagecrypt.Wrapping{Kid: "kbs:///app/image/key", KEK: kek, Recipients: [][]byte{pubB}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	encRef := reg.Host() + "/app:enc"
	er, _ := name.ParseReference(encRef)
	if err := remote.Write(er, enc); err != nil {
		t.Fatal(err)
	}
	// The ciphertext files are 0600 and hold no plaintext.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		info, _ := e.Info()
		if bytes.Contains(b, []byte(marker)) || info.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, plaintext %v", e.Name(), info.Mode().Perm(), bytes.Contains(b, []byte(marker)))
		}
	}
	dec := reg.Host() + "/app:dec"
	skopeo(t, "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--decryption-key", priv, "docker://"+encRef, "docker://"+dec)
	dr, _ := name.ParseReference(dec)
	decImg, err := remote.Image(dr)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := orig.ConfigFile()
	got, _ := decImg.ConfigFile()
	if len(got.RootFS.DiffIDs) != len(want.RootFS.DiffIDs) {
		t.Fatalf("diff_ids %v, want %v", got.RootFS.DiffIDs, want.RootFS.DiffIDs)
	}
	wl, _ := orig.Layers()
	gl, _ := decImg.Layers()
	for i := range wl {
		wd, _ := wl[i].Digest()
		gd, _ := gl[i].Digest()
		if wd != gd || got.RootFS.DiffIDs[i] != want.RootFS.DiffIDs[i] {
			t.Fatalf("layer %d: skopeo decrypted %s (%s), the original is %s (%s)", i, gd, got.RootFS.DiffIDs[i], wd, want.RootFS.DiffIDs[i])
		}
	}
	// The broker's key opens it too (what the agent does).
	plain := decryptAll(t, encRef, func(d v1.Descriptor) ([]byte, error) {
		p, err := imagecrypt.ParsePacket(d.Annotations[imagecrypt.AnnotationProvider])
		if err != nil {
			return nil, err
		}
		if p.Kid != "kbs:///app/image/key" {
			t.Fatalf("kid %q", p.Kid)
		}
		return p.Unwrap(kek)
	})
	if !bytes.Contains(plain, []byte(marker)) {
		t.Fatal("the decrypted layers lack the marker")
	}
	if strings.Contains(string(mustManifest(t, encRef)), marker) {
		t.Fatal("the manifest holds plaintext")
	}
}

func mustManifest(t *testing.T, ref string) []byte {
	t.Helper()
	r, _ := name.ParseReference(ref)
	d, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	return d.Manifest
}
