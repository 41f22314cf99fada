package shimv2

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	toml "github.com/pelletier/go-toml/v2"
)

// hostsFile is the part of containerd's registry host configuration
// (certs.d/HOST/hosts.toml) the runtime reads: the mirrors a node pulls
// through.
type hostsFile struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string `toml:"capabilities"`
	} `toml:"host"`
}

// mirrorFor returns the registry host[:port] the agent should fetch ref
// from, as the node's containerd registry configuration (dir, the same
// certs.d directory as containerd's config_path) says, or "" for the
// image's own registry. The agent verifies the image against its pinned
// digests wherever it comes from.
func mirrorFor(dir, ref string) (string, error) {
	if dir == "" {
		return "", nil
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", nil // not a registry image: no mirror
	}
	reg := r.Context().RegistryStr()
	for _, d := range []string{reg, "_default"} {
		b, err := os.ReadFile(filepath.Join(dir, d, "hosts.toml"))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("registry configuration: %w", err)
		}
		if len(b) > maxOptionsBytes {
			return "", fmt.Errorf("registry configuration %s/hosts.toml is larger than %d bytes", d, maxOptionsBytes)
		}
		var h hostsFile
		if err := toml.Unmarshal(b, &h); err != nil {
			return "", fmt.Errorf("registry configuration %s/hosts.toml: %w", d, err)
		}
		// Mirrors in name order (TOML tables carry no order here), then
		// the server.
		urls := make([]string, 0, len(h.Host)+1)
		for u, c := range h.Host {
			if len(c.Capabilities) == 0 || slices.Contains(c.Capabilities, "pull") {
				urls = append(urls, u)
			}
		}
		slices.Sort(urls)
		if h.Server != "" {
			urls = append(urls, h.Server)
		}
		for _, raw := range urls {
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/" && u.Path != "/v2" && u.Path != "/v2/") {
				continue
			}
			if u.Host == reg {
				return "", nil
			}
			return u.Host, nil
		}
	}
	return "", nil
}
