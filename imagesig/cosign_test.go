package imagesig_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/internal/testcosign"
	"cocoon.dev/cocoon/internal/testimage"
	"cocoon.dev/cocoon/policy"
)

// pushRandom pushes a random image as repo:tag and returns repo@digest.
func pushRandom(t *testing.T, reg *testimage.Registry, repoTag string) (name.Repository, string) {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, pinned, err := reg.Push(repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	d, err := name.NewDigest(pinned)
	if err != nil {
		t.Fatal(err)
	}
	return d.Context(), d.DigestStr()
}

func keyVerifier(t *testing.T, pub string) *imagesig.Verifier {
	t.Helper()
	b, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	v, err := imagesig.New(policy.Signer{Key: string(b)})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCosignInterop signs images with the real cosign CLI, in both formats
// it pushes, and checks what cocoon accepts and refuses against cosign's
// own verdict.
func TestCosignInterop(t *testing.T) {
	c := testcosign.New(t)
	ctx := context.Background()
	reg := testimage.NewRegistry()
	defer reg.Close()
	key1, pub1 := c.KeyPair(t, "one")
	key2, _ := c.KeyPair(t, "two")
	v1 := keyVerifier(t, pub1)

	repo, bundled := pushRandom(t, reg, "app:bundled")
	_, legacy := pushRandom(t, reg, "app:legacy")
	_, other := pushRandom(t, reg, "app:other")
	_, unsigned := pushRandom(t, reg, "app:unsigned")
	_, attested := pushRandom(t, reg, "app:attested")
	c.Sign(t, key1, repo.String()+"@"+bundled, false)
	c.Sign(t, key1, repo.String()+"@"+legacy, true)
	c.Sign(t, key2, repo.String()+"@"+other, false)
	c.Attest(t, key1, repo.String()+"@"+attested, "slsaprovenance", `{"buildType":"x"}`)

	for _, tc := range []struct {
		name, digest string
		legacy       bool
		want         string // "" = verifies
	}{
		{"bundle (cosign v3 default)", bundled, false, ""},
		{"simple signing (cosign v2 format)", legacy, true, ""},
		{"signed by another key", other, false, "failed to verify signature"},
		{"unsigned", unsigned, false, "no signature of"},
		{"an attestation by the same key is not a signature", attested, false, "attestation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cosignErr := c.Verify(repo.String()+"@"+tc.digest, pub1, tc.legacy)
			who, err := imagesig.Check(ctx, repo, []string{tc.digest}, []*imagesig.Verifier{v1}, nil)
			if tc.want == "" {
				if err != nil || who != v1.Name() {
					t.Fatalf("Check = %q, %v; want %q (cosign verify: %v)", who, err, v1.Name(), cosignErr)
				}
				if cosignErr != nil {
					t.Fatalf("cocoon accepts what cosign refuses: %v", cosignErr)
				}
				return
			}
			if !errors.Is(err, imagesig.ErrNotSigned) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %q, %v; want ErrNotSigned saying %q", who, err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}

	// The registry (the host) copies a valid signature to another image:
	// the legacy payload under the other's tag, the bundle as the other's
	// referrer. Neither counts.
	t.Run("a signature moved to another image", func(t *testing.T) {
		_, victim := pushRandom(t, reg, "app:victim")
		src, err := remote.Get(repo.Tag("sha256-" + strings.TrimPrefix(legacy, "sha256:") + ".sig"))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Put(repo.Tag("sha256-"+strings.TrimPrefix(victim, "sha256:")+".sig"), src); err != nil {
			t.Fatal(err)
		}
		moveReferrer(t, repo, bundled, victim)
		_, err = imagesig.Check(ctx, repo, []string{victim}, []*imagesig.Verifier{v1}, nil)
		if !errors.Is(err, imagesig.ErrNotSigned) || !strings.Contains(err.Error(), "the signature is for "+legacy) ||
			!strings.Contains(err.Error(), "referrer") {
			t.Fatalf("Check = %v; want both moved signatures refused", err)
		}
		t.Logf("refused: %v", err)
	})
}

// TestCosignWithoutReferrersAPI: a registry without the referrers API
// gets cosign v3's bundle under the referrers tag, which verifies too.
func TestCosignWithoutReferrersAPI(t *testing.T) {
	c := testcosign.New(t)
	reg := testimage.NewRegistryWithoutReferrers()
	defer reg.Close()
	key, pub := c.KeyPair(t, "k")
	repo, d := pushRandom(t, reg, "app:1")
	c.Sign(t, key, repo.String()+"@"+d, false)
	v := keyVerifier(t, pub)
	if who, err := imagesig.Check(context.Background(), repo, []string{d}, []*imagesig.Verifier{v}, nil); err != nil || who != v.Name() {
		t.Fatalf("Check = %q, %v", who, err)
	}
}

// BenchmarkCheck: fetching and verifying a cosign signature of an image
// from a loopback registry (what a signed image adds to each pull).
func BenchmarkCheck(b *testing.B) {
	c := testcosign.New(b)
	reg := testimage.NewRegistry()
	defer reg.Close()
	key, pub := c.KeyPair(b, "k")
	img, err := random.Image(512, 1)
	if err != nil {
		b.Fatal(err)
	}
	_, pinned, err := reg.Push("app:1", img)
	if err != nil {
		b.Fatal(err)
	}
	c.Sign(b, key, pinned, false)
	d, _ := name.NewDigest(pinned)
	pk, _ := os.ReadFile(pub)
	v, err := imagesig.New(policy.Signer{Key: string(pk)})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if _, err := imagesig.Check(ctx, d.Context(), []string{d.DigestStr()}, []*imagesig.Verifier{v}, nil); err != nil {
			b.Fatal(err)
		}
	}
}
