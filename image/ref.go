package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Transport says where an image comes from.
type Transport string

// The transports an image reference can name.
const (
	// Registry is the OCI distribution protocol.
	Registry Transport = "registry"
	// OCILayout is an OCI image layout directory: oci:PATH[:TAG][@DIGEST].
	OCILayout Transport = "oci"
	// DockerArchive is a `docker save` tarball: docker-archive:PATH[:TAG].
	DockerArchive Transport = "docker-archive"
)

var digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// ValidDigest reports whether d is sha256:<64 lowercase hex>.
func ValidDigest(d string) bool { return digestRE.MatchString(d) }

// Ref is a parsed image reference.
type Ref struct {
	Raw       string
	Transport Transport
	// Name is set for registry references.
	Name name.Reference
	// Path and Tag are set for OCI layouts and docker archives.
	Path string
	Tag  string
	// Digest is the pinned manifest (or index) digest, if any.
	Digest string
}

// String returns the reference as written.
func (r Ref) String() string { return r.Raw }

// ParseRef parses an image reference as written in a pod spec: a registry
// reference (name[:tag][@sha256:...]), oci:PATH[:TAG][@sha256:...] or
// docker-archive:PATH[:TAG].
func ParseRef(s string) (Ref, error) {
	r := Ref{Raw: s}
	switch {
	case s == "":
		return r, fmt.Errorf("empty image reference")
	case strings.HasPrefix(s, "oci:"):
		r.Transport = OCILayout
		rest := strings.TrimPrefix(s, "oci:")
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			r.Digest = rest[i+1:]
			rest = rest[:i]
			if !digestRE.MatchString(r.Digest) {
				return r, fmt.Errorf("image %q: pinned digest %q is not sha256:<64 hex>", s, r.Digest)
			}
		}
		r.Path, r.Tag = splitPathTag(rest)
	case strings.HasPrefix(s, "docker-archive:"):
		r.Transport = DockerArchive
		rest := strings.TrimPrefix(s, "docker-archive:")
		if strings.Contains(rest, "@") {
			return r, fmt.Errorf("image %q: a docker archive cannot be pinned by digest (its manifest is not stored); use an OCI layout (oci:PATH@sha256:...)", s)
		}
		r.Path, r.Tag = splitPathTag(rest)
	default:
		r.Transport = Registry
		ref, err := name.ParseReference(s)
		if err != nil {
			return r, fmt.Errorf("image %q: not a valid registry reference: %w", s, err)
		}
		r.Name = ref
		if d, ok := ref.(name.Digest); ok {
			r.Digest = d.DigestStr()
		}
	}
	if (r.Transport == OCILayout || r.Transport == DockerArchive) && r.Path == "" {
		return r, fmt.Errorf("image %q: missing path after %q", s, string(r.Transport)+":")
	}
	return r, nil
}

// splitPathTag splits PATH[:TAG]; a colon before the last slash is part of
// the path.
func splitPathTag(s string) (string, string) {
	i := strings.LastIndex(s, ":")
	if i < 0 || i < strings.LastIndex(s, "/") {
		return s, ""
	}
	return s[:i], s[i+1:]
}
