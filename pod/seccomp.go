package pod

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/resolve"
)

// DefaultSeccompRoot is kubelet's directory of Localhost seccomp profiles
// (<root-dir>/seccomp).
const DefaultSeccompRoot = "/var/lib/kubelet/seccomp"

// Options are how Parse resolves what a pod spec names outside itself.
type Options struct {
	// SeccompRoot is where Localhost seccomp profiles are, as on the
	// nodes (kubelet's <root-dir>/seccomp); "" is DefaultSeccompRoot.
	SeccompRoot string
	// Secrets are the Secrets of the workload's manifest (name → key →
	// value, see SecretsOf): an env valueFrom.secretKeyRef is resolved
	// from them, and only to a sealed secret, as kubelet will resolve it.
	Secrets map[string]map[string]string
}

// seccompProfile resolves a container's seccomp profile (the container's
// setting, else the pod's) to what the runtime will apply, as JSON:
// RuntimeDefault is containerd's default profile for the container's
// capabilities (what containerd 2.x gives the runtime), Localhost the
// node's file, Unconfined or nothing none.
func seccompProfile(at string, pod, ctr *corev1.SeccompProfile, c *agentv1.ContainerSpec, opts Options) ([]byte, error) {
	sp := ctr
	where := at + ".securityContext.seccompProfile"
	if sp == nil {
		sp, where = pod, "spec.securityContext.seccompProfile"
	}
	if sp == nil {
		return nil, nil
	}
	switch sp.Type {
	case corev1.SeccompProfileTypeUnconfined:
		return nil, nil
	case corev1.SeccompProfileTypeRuntimeDefault:
		caps, err := resolve.Caps(c.GetCapabilitiesAdd(), c.GetCapabilitiesDrop())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		p := seccomp.DefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}})
		return json.Marshal(p)
	case corev1.SeccompProfileTypeLocalhost:
		if sp.LocalhostProfile == nil || *sp.LocalhostProfile == "" {
			return nil, fmt.Errorf("%s: type Localhost needs localhostProfile", where)
		}
		rel := *sp.LocalhostProfile
		if filepath.IsAbs(rel) || strings.Contains("/"+rel+"/", "/../") {
			return nil, fmt.Errorf("%s.localhostProfile %q must be a relative path without \"..\"", where, rel)
		}
		root := opts.SeccompRoot
		if root == "" {
			root = DefaultSeccompRoot
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			return nil, fmt.Errorf("%s: read the Localhost profile: %w (give the directory of the nodes' profiles with --seccomp-root)", where, err)
		}
		// As containerd loads it: the file's JSON as an OCI profile.
		var p specs.LinuxSeccomp
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("%s: Localhost profile %s: %w", where, rel, err)
		}
		return json.Marshal(&p)
	}
	return nil, fmt.Errorf("%s.type %q: use RuntimeDefault, Localhost or Unconfined", where, sp.Type)
}
