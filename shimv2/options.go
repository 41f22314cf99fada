// Package shimv2 is cocoon's containerd runtime (runtime type
// io.containerd.cocoon.v2): a containerd shim built on containerd's shim
// library that runs a Kubernetes pod (the CRI sandbox and its containers)
// in one cocoon sandbox. Every container the CRI creates becomes an agent
// API request, checked by the policy inside the TEE like any other. It is
// host-side code: never linked into the agent.
package shimv2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	toml "github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"cocoon.dev/cocoon/sandbox"
	"cocoon.dev/cocoon/tee"
)

// RuntimeType is the runtime_type containerd's configuration names.
const RuntimeType = "io.containerd.cocoon.v2"

// Options are the runtime's options: the `options` table of the runtime in
// containerd's configuration, which containerd hands the shim as TOML
// (runtimeoptions' config_body), or a file it names (config_path).
type Options struct {
	// Root is cocoon's state directory (default /var/lib/cocoon): the
	// verified layer cache, the simulated secure processor's key, the guest
	// image and the sandboxes under cri/.
	Root string `toml:"root"`
	// Isolation is "process" (default) or "qemu".
	Isolation string `toml:"isolation"`
	// TEE is "sim" (default for the process backend), "snp" or "tdx".
	TEE string `toml:"tee"`
	// Agent is the cocoon-agent binary (default: beside the shim).
	Agent string `toml:"agent"`
	// Runc is the runc the agent runs containers with (default: on PATH).
	Runc string `toml:"runc"`
	// GuestDir is the VM guest image (default <root>/guest).
	GuestDir string `toml:"guest_dir"`
	// QEMU is the QEMU binary (default qemu-system-x86_64).
	QEMU string `toml:"qemu"`
	// Firmware is OVMF (SEV-SNP) or TDVF (TDX).
	Firmware string `toml:"firmware"`
	// BootTimeoutSeconds bounds a VM's boot.
	BootTimeoutSeconds int `toml:"boot_timeout_seconds"`
	// DefaultPolicy is a policy file for pods without a cocoon.dev/policy
	// annotation (none: such pods are refused). It is the node operator's
	// choice, so the host's: an allow-all policy here lets conformance
	// suites run (docs/kubernetes.md), and its hash in the report says so.
	DefaultPolicy string `toml:"default_policy"`
	// RegistryConfigPath is containerd's registry host directory (its
	// config_path, e.g. /etc/containerd/certs.d): the agent pulls through
	// the mirrors it names, as the node does.
	RegistryConfigPath string `toml:"registry_config_path"`
}

// maxOptionsBytes bounds the options containerd passes.
const maxOptionsBytes = 64 << 10

// ParseOptions reads the options from what containerd passes (nil: the
// defaults).
func ParseOptions(a *anypb.Any) (*Options, error) {
	var o Options
	if a == nil {
		return o.withDefaults()
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		return nil, fmt.Errorf("runtime options: %w", err)
	}
	ro, ok := v.(*runtimeoptions.Options)
	if !ok {
		return nil, fmt.Errorf("runtime options are %T; the cocoon runtime takes the generic options table (runtime_type %q)", v, RuntimeType)
	}
	body := ro.GetConfigBody()
	if p := ro.GetConfigPath(); p != "" {
		if body, err = os.ReadFile(p); err != nil {
			return nil, fmt.Errorf("runtime options: %w", err)
		}
	}
	if err := decodeOptions(body, &o); err != nil {
		return nil, err
	}
	return o.withDefaults()
}

func decodeOptions(body []byte, o *Options) error {
	if len(body) > maxOptionsBytes {
		return fmt.Errorf("runtime options are %d bytes; at most %d", len(body), maxOptionsBytes)
	}
	dec := toml.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(o); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			var keys []string
			for _, e := range sm.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("unknown runtime option %s in the cocoon runtime's options table; known: root, isolation, tee, agent, runc, guest_dir, qemu, firmware, boot_timeout_seconds, default_policy, registry_config_path", strings.Join(keys, ", "))
		}
		return fmt.Errorf("runtime options (the cocoon runtime's options table in containerd's configuration): %w", err)
	}
	return nil
}

func (o Options) withDefaults() (*Options, error) {
	if o.Root == "" {
		o.Root = "/var/lib/cocoon"
	}
	if o.Isolation == "" {
		o.Isolation = "process"
	}
	if o.Agent == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the shim's own path: %w", err)
		}
		o.Agent = siblingPath(self, "cocoon-agent")
	}
	return &o, nil
}

// sandboxOptions are the sandbox package's launch settings.
func (o *Options) sandboxOptions() sandbox.Options {
	return sandbox.Options{
		Root: sandbox.Root(o.Root), AgentBinary: o.Agent, Runc: o.Runc,
		TEE: tee.Kind(o.TEE), Isolation: o.Isolation, GuestDir: o.GuestDir,
		QEMU: o.QEMU, Firmware: o.Firmware, BootTimeout: time.Duration(o.BootTimeoutSeconds) * time.Second,
	}
}
