package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// resolved is an image whose manifest and config were fetched and verified;
// its layers are still to be fetched and verified.
type resolved struct {
	repoDigest     string // digest of the top-level manifest or index
	manifestDigest string // digest of the platform image manifest
	manifest       *v1.Manifest
	rawConfig      []byte
	// layer opens layer i: compressed as stored, or (when uncompressed is
	// true) the uncompressed tar.
	layer        func(i int) (io.ReadCloser, error)
	uncompressed bool
}

const maxManifestBytes = 4 << 20

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func platformMatches(p *v1.Platform) bool {
	if p == nil {
		return false
	}
	return p.OS == "linux" && p.Architecture == runtime.GOARCH
}

// pickPlatform chooses this machine's platform from an index.
func pickPlatform(raw []byte, what string) (v1.Descriptor, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("%s: parse image index: %w", what, err)
	}
	var seen []string
	for _, d := range idx.Manifests {
		if platformMatches(d.Platform) {
			return d, nil
		}
		if d.Platform != nil {
			seen = append(seen, d.Platform.OS+"/"+d.Platform.Architecture)
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%s: the image index has no linux/%s image (it has: %s)", what, runtime.GOARCH, strings.Join(seen, ", "))
}

func verifyDigest(raw []byte, want, what string) error {
	if len(raw) > maxManifestBytes {
		return fmt.Errorf("%s: manifest is %d bytes, more than the %d allowed", what, len(raw), maxManifestBytes)
	}
	if got := sha256Digest(raw); want != "" && got != want {
		return fmt.Errorf("%s: manifest digest is %s but %s was expected: %w", what, got, want, ErrDigestMismatch)
	}
	return nil
}

func isIndex(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

func finishImage(res *resolved, img v1.Image, what string) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("%s: read manifest: %w", what, err)
	}
	if err := verifyDigest(raw, res.manifestDigest, what); err != nil {
		return err
	}
	res.manifestDigest = sha256Digest(raw)
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("%s: parse manifest: %w", what, err)
	}
	res.manifest = m
	res.rawConfig, err = img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("%s: fetch config %s: %w", what, m.Config.Digest, err)
	}
	res.layer = func(i int) (io.ReadCloser, error) {
		l, err := img.LayerByDigest(m.Layers[i].Digest)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	return nil
}

func resolveRegistry(ctx context.Context, ref Ref, tr http.RoundTripper) (*resolved, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr)}
	desc, err := remote.Get(ref.Name, opts...)
	if err != nil {
		return nil, fmt.Errorf("image %s: fetch manifest: %w", ref, err)
	}
	if err := verifyDigest(desc.Manifest, ref.Digest, "image "+ref.Raw); err != nil {
		return nil, err
	}
	res := &resolved{repoDigest: sha256Digest(desc.Manifest), manifestDigest: sha256Digest(desc.Manifest)}
	target := ref.Name.Context().Digest(res.repoDigest)
	if isIndex(desc.MediaType) {
		child, err := pickPlatform(desc.Manifest, "image "+ref.Raw)
		if err != nil {
			return nil, err
		}
		res.manifestDigest = child.Digest.String()
		target = ref.Name.Context().Digest(child.Digest.String())
	}
	img, err := remote.Image(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("image %s: fetch %s: %w", ref, target.DigestStr(), err)
	}
	return res, finishImage(res, img, "image "+ref.Raw)
}

func resolveLayout(ref Ref) (*resolved, error) {
	what := "image " + ref.Raw
	p, err := layout.FromPath(ref.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: open OCI layout: %w", what, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("%s: read index.json: %w", what, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: parse index.json: %w", what, err)
	}
	var desc *v1.Descriptor
	var tags []string
	for i, d := range im.Manifests {
		tag := d.Annotations["org.opencontainers.image.ref.name"]
		if tag != "" {
			tags = append(tags, tag)
		}
		switch {
		case ref.Digest != "" && d.Digest.String() == ref.Digest && (ref.Tag == "" || ref.Tag == tag),
			ref.Digest == "" && ref.Tag != "" && tag == ref.Tag,
			ref.Digest == "" && ref.Tag == "" && len(im.Manifests) == 1:
			desc = &im.Manifests[i]
		}
	}
	if desc == nil {
		switch {
		case ref.Digest != "":
			return nil, fmt.Errorf("%s: the layout has no manifest %s", what, ref.Digest)
		case ref.Tag != "":
			return nil, fmt.Errorf("%s: the layout has no image tagged %q (tags: %s)", what, ref.Tag, strings.Join(tags, ", "))
		default:
			return nil, fmt.Errorf("%s: the layout holds %d images; name one with oci:PATH:TAG (tags: %s)", what, len(im.Manifests), strings.Join(tags, ", "))
		}
	}
	res := &resolved{repoDigest: desc.Digest.String(), manifestDigest: desc.Digest.String()}
	if isIndex(desc.MediaType) {
		child, err := idx.ImageIndex(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: open nested index: %w", what, err)
		}
		raw, err := child.RawManifest()
		if err != nil {
			return nil, fmt.Errorf("%s: read nested index: %w", what, err)
		}
		if err := verifyDigest(raw, desc.Digest.String(), what); err != nil {
			return nil, err
		}
		cd, err := pickPlatform(raw, what)
		if err != nil {
			return nil, err
		}
		res.manifestDigest = cd.Digest.String()
		img, err := child.Image(cd.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: open image %s: %w", what, cd.Digest, err)
		}
		return res, finishImage(res, img, what)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: open image %s: %w", what, desc.Digest, err)
	}
	return res, finishImage(res, img, what)
}

func resolveArchive(ref Ref) (*resolved, error) {
	what := "image " + ref.Raw
	var tag *name.Tag
	if ref.Tag != "" {
		t, err := name.NewTag(ref.Tag)
		if err != nil {
			return nil, fmt.Errorf("%s: bad tag %q: %w", what, ref.Tag, err)
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(ref.Path, tag)
	if err != nil {
		return nil, fmt.Errorf("%s: open docker archive: %w", what, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s: read config: %w", what, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("%s: read layers: %w", what, err)
	}
	// A docker archive stores no manifest: the config (and its diff_ids)
	// is what identifies the image. Sizes are unknown until read.
	cd, _ := v1.NewHash(sha256Digest(raw))
	m := &v1.Manifest{Config: v1.Descriptor{Digest: cd}, Layers: make([]v1.Descriptor, len(layers))}
	return &resolved{
		repoDigest: cd.String(), manifestDigest: cd.String(), manifest: m, rawConfig: raw, uncompressed: true,
		layer: func(i int) (io.ReadCloser, error) { return layers[i].Uncompressed() },
	}, nil
}
