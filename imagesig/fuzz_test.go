package imagesig_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/policy"
)

// A payload as cosign v2 writes it (from TestCosignInterop's registry).
const cosignPayload = `{"critical":{"identity":{"docker-reference":"127.0.0.1:5555/app"},"image":{"docker-manifest-digest":"sha256:681e97a3c17e8e14fd11a71b68ac18841635976146d5d2ececc1897141947eb7"},"type":"cosign container image signature"},"optional":null}`

// A bundle as cosign v3 writes it for a key (same registry, same image).
const cosignBundle = `{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":"6uwVJjj7zNGgfyvfR9sorlpUi27GjFjkAFUr8poPdEY="}},"dsseEnvelope":{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEiLCJzdWJqZWN0IjpbeyJkaWdlc3QiOnsic2hhMjU2IjoiNjgxZTk3YTNjMTdlOGUxNGZkMTFhNzFiNjhhYzE4ODQxNjM1OTc2MTQ2ZDVkMmVjZWNjMTg5NzE0MTk0N2ViNyJ9LCJhbm5vdGF0aW9ucyI6e319XSwicHJlZGljYXRlVHlwZSI6Imh0dHBzOi8vc2lnc3RvcmUuZGV2L2Nvc2lnbi9zaWduL3YxIiwicHJlZGljYXRlIjp7fX0=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"MEQCID+coT/OtkSVX/Ru/7B0cKwWodNyU/D3eeBDznNh8ARAAiBtaYVh4qAKYVavm+ehjJV0hcwFpEcVt1zzxBu7MDjreA=="}]}}`

const fuzzDigest = "sha256:681e97a3c17e8e14fd11a71b68ac18841635976146d5d2ececc1897141947eb7"

func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(cosignPayload))
	f.Add([]byte(`{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:zz"}}}`))
	f.Add([]byte(`{"critical":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := imagesig.ParsePayload(b)
		if err == nil && !strings.HasPrefix(p.Critical.Image.DockerManifestDigest, "sha256:") {
			t.Fatalf("accepted a payload without a sha256 digest: %q", b)
		}
	})
}

// FuzzVerify feeds arbitrary bundles and payloads to the verifier: it
// must refuse them (the key is fresh: nothing can verify) without a panic.
func FuzzVerify(f *testing.F) {
	f.Add([]byte(cosignBundle), []byte(cosignPayload), "MEUCIQ==")
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`), []byte(`{}`), "")
	f.Add([]byte(`{}`), []byte(cosignPayload), "!!")
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	v, err := imagesig.New(policy.Signer{Key: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, bundle, payload []byte, sig string) {
		cands := []imagesig.Candidate{{Where: "bundle", Bundle: bundle}, {Where: "payload", Payload: payload, Signature: sig}}
		if who, err := imagesig.Verify(cands, fuzzDigest, []*imagesig.Verifier{v}); err == nil {
			t.Fatalf("verified under a fresh key: %q", who)
		}
	})
}
