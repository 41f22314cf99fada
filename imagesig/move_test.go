package imagesig_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rawManifest is a manifest pushed as is.
type rawManifest struct {
	body []byte
	mt   types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.body, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// moveReferrer pushes from's first referrer again with to as its subject:
// the same bundle, now claiming to be about another image.
func moveReferrer(t *testing.T, repo name.Repository, from, to string) {
	t.Helper()
	idx, err := remote.Referrers(repo.Digest(from))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) == 0 {
		t.Fatalf("referrers of %s: %v (%d)", from, err, len(im.Manifests))
	}
	desc, err := remote.Get(repo.Digest(im.Manifests[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	target, err := remote.Get(repo.Digest(to))
	if err != nil {
		t.Fatal(err)
	}
	m.Subject = &v1.Descriptor{MediaType: target.MediaType, Size: target.Size, Digest: target.Digest}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := v1.SHA256(bytesReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(repo.Digest(h.String()), rawManifest{body, desc.MediaType}); err != nil {
		t.Fatal(err)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
