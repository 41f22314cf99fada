package imagesig

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Media types and annotations of cosign's signatures.
const (
	BundleMediaType        = "application/vnd.dev.sigstore.bundle.v0.3+json"
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	SignatureAnnotation    = "dev.cosignproject.cosign/signature"
	CertificateAnnotation  = "dev.sigstore.cosign/certificate"
)

// Candidate is one signature found in a registry for an image digest.
type Candidate struct {
	// Where names it in errors: "referrer sha256:…" or "tag
	// sha256-<hex>.sig layer N".
	Where string
	// Bundle is a Sigstore bundle (JSON), or Payload a simple-signing
	// payload with its base64 Signature (and a PEM Certificate when the
	// signature was keyless).
	Bundle      []byte
	Payload     []byte
	Signature   string
	Certificate string
}

// Fetch finds the signatures of repo@digest: Sigstore bundles among the
// digest's OCI referrers (or the referrers tag a registry without the
// API holds), and the simple-signing layers of the sha256-<hex>.sig tag.
// A registry error (other than "no such tag") fails it: the caller fails
// closed.
func Fetch(ctx context.Context, repo name.Repository, digest string, tr http.RoundTripper) ([]Candidate, error) {
	hexd, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexd) != 64 {
		return nil, fmt.Errorf("signatures of %q: not a sha256 digest", digest)
	}
	if tr == nil {
		tr = http.DefaultTransport
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr)}
	var out []Candidate
	idx, err := remote.Referrers(repo.Digest(digest), opts...)
	if err != nil {
		return nil, fmt.Errorf("signatures of %s: referrers: %w", digest, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("signatures of %s: referrers: %w", digest, err)
	}
	for _, d := range im.Manifests {
		if len(out) == MaxCandidates {
			break
		}
		c, ok, err := referrer(repo, d, opts)
		if err != nil {
			return nil, fmt.Errorf("signatures of %s: %w", digest, err)
		}
		if ok {
			out = append(out, c)
		}
	}
	legacy, err := legacyTag(repo, hexd, MaxCandidates-len(out), opts)
	if err != nil {
		return nil, fmt.Errorf("signatures of %s: %w", digest, err)
	}
	return append(out, legacy...), nil
}

// referrer reads one referrer if it is a Sigstore bundle. The index's
// artifactType is the registry's to say (some report the config's media
// type), so the manifest itself decides.
func referrer(repo name.Repository, d v1.Descriptor, opts []remote.Option) (Candidate, bool, error) {
	if d.ArtifactType != "" && d.ArtifactType != BundleMediaType && d.ArtifactType != "application/vnd.oci.empty.v1+json" {
		return Candidate{}, false, nil
	}
	if d.Size > MaxManifestBytes {
		return Candidate{}, false, nil
	}
	m, err := manifest(repo.Digest(d.Digest.String()), opts)
	if err != nil {
		return Candidate{}, false, fmt.Errorf("referrer %s: %w", d.Digest, err)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != BundleMediaType {
		return Candidate{}, false, nil
	}
	b, err := blob(repo, m.Layers[0], MaxBundleBytes, opts)
	if err != nil {
		return Candidate{}, false, fmt.Errorf("referrer %s: bundle: %w", d.Digest, err)
	}
	return Candidate{Where: "referrer " + d.Digest.String(), Bundle: b}, true, nil
}

// legacyTag reads cosign v2's signatures: an image under the tag
// sha256-<hex>.sig whose layers are simple-signing payloads.
func legacyTag(repo name.Repository, hexd string, room int, opts []remote.Option) ([]Candidate, error) {
	tag := "sha256-" + hexd + ".sig"
	m, err := manifest(repo.Tag(tag), opts)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tag %s: %w", tag, err)
	}
	var out []Candidate
	for i, l := range m.Layers {
		if len(out) >= room {
			break
		}
		if l.MediaType != SimpleSigningMediaType {
			continue
		}
		p, err := blob(repo, l, MaxPayloadBytes, opts)
		if err != nil {
			return nil, fmt.Errorf("tag %s layer %d: %w", tag, i+1, err)
		}
		out = append(out, Candidate{
			Where: fmt.Sprintf("tag %s layer %d", tag, i+1), Payload: p,
			Signature: l.Annotations[SignatureAnnotation], Certificate: l.Annotations[CertificateAnnotation],
		})
	}
	return out, nil
}

func manifest(ref name.Reference, opts []remote.Option) (*v1.Manifest, error) {
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, err
	}
	if len(desc.Manifest) > MaxManifestBytes {
		return nil, fmt.Errorf("manifest is %d bytes, more than %d", len(desc.Manifest), MaxManifestBytes)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// blob fetches a blob of at most limit bytes and checks it against its
// descriptor.
func blob(repo name.Repository, d v1.Descriptor, limit int64, opts []remote.Option) ([]byte, error) {
	if d.Size > limit || d.Size < 0 {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", d.Digest, d.Size, limit)
	}
	l, err := remote.Layer(repo.Digest(d.Digest.String()), opts...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); int64(len(b)) != d.Size || got != d.Digest.String() {
		return nil, fmt.Errorf("blob is %s (%d bytes) but the manifest says %s (%d bytes)", got, len(b), d.Digest, d.Size)
	}
	return b, nil
}
