package image

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Mirrored is ref fetched from mirror, a registry host[:port] that serves
// the same repositories (a node's pull-through cache or an air-gapped
// copy): the repository path and the tag or digest stay. What is fetched is
// verified exactly as from the original registry, against the policy's
// pinned digests, so a mirror can withhold an image but not change one.
func Mirrored(ref, mirror string) (string, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	if r.Transport != Registry {
		return "", fmt.Errorf("image %q: only registry images can come from a mirror", ref)
	}
	if mirror == "" || strings.ContainsAny(mirror, "/@?#\\ ") {
		return "", fmt.Errorf("mirror %q: want a registry host[:port]", mirror)
	}
	reg, err := name.NewRegistry(mirror, name.StrictValidation)
	if err != nil || reg.RegistryStr() != mirror {
		return "", fmt.Errorf("mirror %q: want a registry host[:port]", mirror)
	}
	out := mirror + "/" + r.Name.Context().RepositoryStr()
	switch n := r.Name.(type) {
	case name.Digest:
		out += "@" + n.DigestStr()
	case name.Tag:
		out += ":" + n.TagStr()
	}
	return out, nil
}
