package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/imagecrypt"
	"cocoon.dev/cocoon/internal/testimage"
)

// pushEncrypted pushes testImage(n) encrypted for a broker key and
// returns its pinned reference, the key and the plain image.
func pushEncrypted(t *testing.T, reg *testimage.Registry, repoTag string, n int) (string, []byte, v1.Image) {
	t.Helper()
	plain := testImage(t, n)
	kek := make([]byte, 32)
	rand.Read(kek)
	enc, err := imagecrypt.EncryptImage(plain, imagecrypt.Wrapping{Kid: "kbs:///app/image/key", KEK: kek}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, pinned, err := reg.Push(repoTag, enc)
	if err != nil {
		t.Fatal(err)
	}
	return pinned, kek, plain
}

func packetKey(kek []byte, asked *int) func(context.Context, v1.Descriptor) ([]byte, error) {
	return func(_ context.Context, d v1.Descriptor) ([]byte, error) {
		*asked++
		p, err := imagecrypt.ParsePacket(d.Annotations[imagecrypt.AnnotationProvider])
		if err != nil {
			return nil, err
		}
		return p.Unwrap(kek)
	}
}

// storeRoot is the directory of the puller's layer store.
func storeRoot(p *Puller) string {
	return filepath.Dir(filepath.Dir(filepath.Dir(p.Store.Path("sha256:" + strings.Repeat("0", 64)))))
}

// storeHolds says whether any file under the store holds b.
func storeHolds(t *testing.T, dir string, b []byte) bool {
	found := false
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if c, _ := os.ReadFile(p); bytes.Contains(c, b) {
				found = true
			}
		}
		return nil
	})
	return found
}

// TestPullEncrypted: encrypted layers are decrypted on their way into the
// store and verified against the config's diff_ids; without the key, with
// a wrong one, or with tampered ciphertext nothing is stored.
func TestPullEncrypted(t *testing.T) {
	reg := testimage.NewRegistry()
	defer reg.Close()
	ref, kek, plain := pushEncrypted(t, reg, "enc/img:v1", 2)
	ctx := context.Background()
	xs := []byte(strings.Repeat("x", 1000))

	t.Run("decrypted with the key", func(t *testing.T) {
		p := newPuller(t)
		asked := 0
		p.LayerKey = packetKey(kek, &asked)
		img, err := p.Pull(ctx, ref, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := plain.ConfigFile()
		for i, d := range img.DiffIDs {
			if d != want.RootFS.DiffIDs[i].String() || !p.Store.Has(d) {
				t.Fatalf("layer %d: %s, want %s in the store", i, d, want.RootFS.DiffIDs[i])
			}
		}
		if b, err := os.ReadFile(filepath.Join(img.LayerDirs[0], "data", "fa")); err != nil || !bytes.Equal(b, xs) {
			t.Fatalf("unpacked file: %q %v", b, err)
		}
		if !storeHolds(t, storeRoot(p), xs) {
			t.Fatal("storeHolds does not see the plaintext it is meant to find")
		}
		// Cached now; a second pull still asks for every key: the key's
		// release is what authorises the image.
		asked = 0
		if img, err = p.Pull(ctx, ref, nil); err != nil || img.CachedLayers != 2 || asked != 2 {
			t.Fatalf("cached pull: %v, %d cached, %d keys asked", err, img.CachedLayers, asked)
		}
		p.LayerKey = func(context.Context, v1.Descriptor) ([]byte, error) { return nil, errors.New("release refused") }
		if _, err := p.Pull(ctx, ref, nil); err == nil || !strings.Contains(err.Error(), "release refused") {
			t.Fatalf("cached image without its key: %v", err)
		}
	})
	for _, tc := range []struct {
		name   string
		key    func(*Puller)
		tamper bool
		want   string
	}{
		{"no key function", func(p *Puller) {}, false, "nothing here can unwrap its key"},
		{"another key", func(p *Puller) {
			other := make([]byte, 32)
			rand.Read(other)
			asked := 0
			p.LayerKey = packetKey(other, &asked)
		}, false, "does not open this layer's key"},
		{"tampered ciphertext", nil, true, "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, k, _ := pushEncrypted(t, reg, "enc/"+strings.ReplaceAll(tc.name, " ", "-")+":v1", 1)
			p := newPuller(t)
			if tc.tamper {
				asked := 0
				p.LayerKey = packetKey(k, &asked)
				in, err := Inspect(ctx, r, nil)
				if err != nil {
					t.Fatal(err)
				}
				reg.Tamper(in.Layers()[0].Digest.String())
			} else {
				tc.key(p)
			}
			_, err := p.Pull(ctx, r, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pull = %v, want an error saying %q", err, tc.want)
			}
			if storeHolds(t, storeRoot(p), xs) {
				t.Fatal("plaintext reached the store")
			}
		})
	}
}
