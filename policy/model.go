// Package policy is cocoon's security policy as the agent enforces it: the
// model, the embedded Rego framework and the engine that evaluates every host
// request inside the sandbox with OPA, with denials that say what was asked
// and what the policy allows. It is part of the TCB; the generator (pod spec
// + images -> policy) is package policygen, on the host.
//
// A policy is Rego text: the package cocoon.policy with the framework version
// and one JSON data document. Its SHA-256 (SNP, sim) or SHA-384 (TDX) is the
// sandbox's HOST_DATA / MRCONFIGID, so the hardware report says which policy
// the agent enforces.
package policy

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"cocoon.dev/cocoon/tee"
)

// FrameworkVersion is the version of the embedded Rego rules a policy needs.
const FrameworkVersion = "1"

// Policy is the data of a policy.
type Policy struct {
	FrameworkVersion string `json:"framework_version"`
	// Debug policies allow exec of any command and reading every log; they
	// are for development and say so.
	Debug bool `json:"debug"`
	// AllowAll policies allow every request (runtime conformance tests,
	// development): the host decides what runs. The agent gives such a
	// sandbox no secrets and no encrypted volumes, and the report's
	// HOST_DATA names the policy, so no relying party mistakes it for a
	// workload's.
	AllowAll   bool                  `json:"allow_all,omitempty"`
	Sandbox    Sandbox               `json:"sandbox"`
	Containers map[string]*Container `json:"containers"`
	// Images are the allowed image references and their digests.
	Images map[string]Image `json:"images"`
	// KBS is the key broker the agent fetches resources from, so the host
	// cannot point it at another one.
	KBS *KBS `json:"kbs,omitempty"`
	// AttestationService is the attestation service the agent asks for
	// MAA-style tokens (the in-pod Azure SKR API's /attest/maa), pinned
	// like the key broker.
	AttestationService *KBS `json:"attestation_service,omitempty"`
	// SKRPort, when set, is the pod-loopback port of the in-pod Azure SKR
	// API (opt-in: applications often listen on its usual 8080).
	SKRPort int `json:"skr_port,omitempty"`
}

// KBS names a service (a key broker, an attestation service) and the CA its
// TLS certificate must chain to.
type KBS struct {
	URL string `json:"url"`
	// CA is PEM; empty means the system roots.
	CA string `json:"ca,omitempty"`
}

// Sandbox is the pod-level part.
type Sandbox struct {
	Name string `json:"name"`
	// Hostname is pinned, or empty: a workload's replicas are named by
	// their controller, and any DNS label the host gives is admitted.
	Hostname string   `json:"hostname"`
	Volumes  []Volume `json:"volumes"`
	// EncryptedVolumes are LUKS2 volumes opened with keys from the key
	// broker: their source and key are pinned.
	EncryptedVolumes []EncryptedVolume `json:"encrypted_volumes"`
	// SealedVolumes are Secret volumes of sealed secrets: their files'
	// sealed references are pinned; the agent writes the released values.
	SealedVolumes []SealedVolume `json:"sealed_volumes,omitempty"`
	// Sysctls are the pod's (securityContext.sysctls), pinned; the
	// runtime's two defaults (RuntimeSysctls) are admitted besides.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// RuntimeSysctl reports whether k=v is one of the sysctls containerd sets
// on every pod sandbox by default (enable_unprivileged_ports,
// enable_unprivileged_icmp): a sandbox may have them whatever its policy
// pins.
func RuntimeSysctl(k, v string) bool {
	switch k {
	case "net.ipv4.ip_unprivileged_port_start":
		return v == "0"
	case "net.ipv4.ping_group_range":
		return v == "0 2147483647"
	}
	return false
}

// EncryptedVolume is a LUKS2 volume of the pod.
type EncryptedVolume struct {
	Name     string `json:"name"`
	Source   string `json:"source"`
	Key      string `json:"key"`
	ReadOnly bool   `json:"read_only"`
}

// SealedVolume is a Secret volume of the pod whose values are sealed
// secrets.
type SealedVolume struct {
	Name  string       `json:"name"`
	Files []SealedFile `json:"files"`
}

// SealedFile is one file of a sealed volume: its path in the volume, the
// sealed reference and its mode bits.
type SealedFile struct {
	Path  string `json:"path"`
	Value string `json:"value"`
	Mode  uint32 `json:"mode"`
}

// Volume is an emptyDir of the pod.
type Volume struct {
	Name           string `json:"name"`
	SizeLimitBytes int64  `json:"size_limit_bytes"`
}

// Image is what the policy pins of an image.
type Image struct {
	// Digest is the platform image manifest digest the agent must pull.
	// Empty when SignedBy is set: the policy trusts a signer instead.
	Digest       string   `json:"digest"`
	ConfigDigest string   `json:"config_digest"`
	Layers       []string `json:"layers"`
	// LayerSizes are the layers' uncompressed sizes: the agent stops
	// unpacking a layer that grows past its size (absent in policies of
	// older releases, or -1 for an encrypted layer the generator could not
	// read: the agent's default bound applies).
	LayerSizes []int64 `json:"layer_sizes,omitempty"`
	// LayerDisks are the layers' verified read-only disks (parallel to
	// Layers): a VM sandbox may take a layer from a disk the host built
	// only if dm-verity opens it with this root hash (absent: the agent
	// pulls and unpacks the layer itself).
	LayerDisks []LayerDisk `json:"layer_disks,omitempty"`
	// DecryptionKey is the key broker resource (kbs:///repo/type/tag)
	// holding the private key of the image's JWE-encrypted layers (skopeo
	// --encryption-key jwe:…). Layers whose key the broker holds directly
	// (the provider.attestation-agent annotation) need none: their key id
	// is in the manifest the policy pins or the signer signed.
	DecryptionKey string `json:"decryption_key,omitempty"`
	// SignedBy, when set, trusts who signed the image rather than its
	// digest: the agent pulls it only with a signature (cosign's, in a
	// registry) that one of these signers verifies, and the config fields
	// below must still be exactly the signed image's.
	SignedBy []Signer `json:"signed_by,omitempty"`
	// The image config fields that decide what runs.
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"working_dir"`
	User       string   `json:"user"`
}

// LayerDisk pins a layer disk (layerdisk's format): the dm-verity root
// hash of its squashfs image and that image's size in 4 KiB blocks. The
// salt is fixed by the format and the layer's diff_id.
type LayerDisk struct {
	RootHash   string `json:"root_hash"`
	DataBlocks int64  `json:"data_blocks"`
}

// Signer is who may sign an image: a public key, or a keyless
// (Sigstore/Fulcio) certificate identity under a pinned trusted root.
type Signer struct {
	// Key is a PEM public key (ECDSA, Ed25519 or RSA), as `cosign
	// generate-key-pair` writes cosign.pub.
	Key string `json:"key,omitempty"`
	// Identity (exact) or IdentityRegexp (anchored by its author) is the
	// certificate's subject alternative name (an email, a workflow URI);
	// Issuer is its OIDC issuer. Keyless signers need TrustedRoot.
	Identity       string `json:"identity,omitempty"`
	IdentityRegexp string `json:"identity_regexp,omitempty"`
	Issuer         string `json:"issuer,omitempty"`
	// TrustedRoot is a Sigstore trusted_root.json (Fulcio CAs, Rekor and
	// CT log keys, timestamp authorities).
	TrustedRoot string `json:"trusted_root,omitempty"`
	// TransparencyLog requires an entry in a Rekor log of TrustedRoot,
	// checked offline from the signature's bundle.
	TransparencyLog bool `json:"transparency_log,omitempty"`
}

// Resources are a container's limits.
type Resources struct {
	MemoryLimitBytes int64 `json:"memory_limit_bytes"`
	CPULimitMillis   int64 `json:"cpu_limit_millis"`
}

// Mount is a volume mount of a container.
type Mount struct {
	Volume   string `json:"volume"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only"`
	SubPath  string `json:"sub_path"`
}

// Container is what one container may be.
type Container struct {
	Kind  string `json:"kind"`
	Image string `json:"image"`
	// Args is the exact command line (entrypoint and cmd resolved).
	Args []string `json:"args"`
	// Env lists exact NAME=VALUE entries that must all be present;
	// EnvPatterns are anchored regexes for other allowed entries (platform
	// injected variables).
	Env         []string `json:"env"`
	EnvPatterns []string `json:"env_patterns"`
	WorkingDir  string   `json:"working_dir"`
	// RunAsUser / RunAsGroup: -1 means not set (the image's user).
	RunAsUser              int64 `json:"run_as_user"`
	RunAsGroup             int64 `json:"run_as_group"`
	RunAsNonRoot           bool  `json:"run_as_non_root"`
	ReadOnlyRootFilesystem bool  `json:"read_only_root_filesystem"`
	NoNewPrivileges        bool  `json:"no_new_privileges"`
	// SharePIDNamespace: the container joins the pod's shared PID
	// namespace (shareProcessNamespace). Absent in older policies: false.
	SharePIDNamespace bool `json:"share_pid_namespace,omitempty"`
	// SupplementalGroups are the process's supplementary groups (the
	// pod's supplementalGroups and fsGroup), as a set. Absent: none.
	SupplementalGroups []int64 `json:"supplemental_groups,omitempty"`
	// Stdin: the container has a stdin the host writes (the pod spec's
	// stdin; kubectl attach). TTY: it runs on a terminal (tty). Absent:
	// false.
	Stdin bool `json:"stdin,omitempty"`
	TTY   bool `json:"tty,omitempty"`
	// Seccomp is the digest of the container's seccomp profile in its
	// canonical form (SeccompProfile), "sha256:<hex>"; absent: none
	// (unconfined).
	Seccomp      string   `json:"seccomp,omitempty"`
	Capabilities []string `json:"capabilities"`
	Mounts       []Mount  `json:"mounts"`
	// Resources are the container's limits (0: none), as the pod spec
	// sets them.
	Resources Resources `json:"resources"`
	// Exec lists the exact command lines the host may exec (none by
	// default); ExecAny allows every command (debug policies). An exec
	// never sets env or a working directory (it inherits the container's);
	// ExecStdin lets the host feed it standard input.
	Exec      [][]string `json:"exec"`
	ExecAny   bool       `json:"exec_any"`
	ExecStdin bool       `json:"exec_stdin"`
	// Signals the host may send.
	Signals []int `json:"signals"`
	// Stdio: whether the host may read the container's output.
	Stdio bool `json:"stdio"`
}

const (
	header = "# cocoon policy: generated by `cocoon policy generate`. Its hash is the sandbox's\n# HOST_DATA; any change makes a different policy.\npackage cocoon.policy\n\n"
	marker = "\npolicy := "
)

// Render turns a policy into its Rego text. The output is deterministic.
func Render(p *Policy) ([]byte, error) {
	p.FrameworkVersion = FrameworkVersion
	var data bytes.Buffer
	enc := json.NewEncoder(&data)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(header)
	fmt.Fprintf(&b, "framework_version := %q\n", FrameworkVersion)
	b.WriteString(marker)
	b.Write(data.Bytes())
	return b.Bytes(), nil
}

// MaxPolicyBytes bounds a policy.
const MaxPolicyBytes = 1 << 20

// Parse reads a policy's Rego text (as Render writes it) strictly.
func Parse(text []byte) (*Policy, error) {
	if len(text) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes; at most %d", len(text), MaxPolicyBytes)
	}
	i := bytes.Index(text, []byte(marker))
	if i < 0 || !bytes.Contains(text[:i], []byte("package cocoon.policy")) {
		return nil, errors.New("not a cocoon policy: want `package cocoon.policy` and `policy := {...}` (generate one with cocoon policy generate)")
	}
	dec := json.NewDecoder(bytes.NewReader(text[i+len(marker):]))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy data: %w", err)
	}
	if p.FrameworkVersion != FrameworkVersion {
		return nil, fmt.Errorf("policy needs framework version %q; this cocoon has %q", p.FrameworkVersion, FrameworkVersion)
	}
	if !bytes.Contains(text[:i], []byte(fmt.Sprintf("framework_version := %q", FrameworkVersion))) {
		return nil, errors.New("policy text and data disagree on the framework version")
	}
	if len(p.Containers) == 0 && !p.AllowAll {
		return nil, errors.New("policy allows no container")
	}
	for ref, img := range p.Images {
		if len(img.LayerSizes) != 0 && len(img.LayerSizes) != len(img.Layers) {
			return nil, fmt.Errorf("policy image %q pins %d layer sizes for %d layers", ref, len(img.LayerSizes), len(img.Layers))
		}
		for i, n := range img.LayerSizes {
			// -1: an encrypted layer's size, unknown to the generator.
			if n < 1024 && n != -1 {
				return nil, fmt.Errorf("policy image %q: layer %d has size %d; a layer tar is at least 1024 bytes (-1: unknown)", ref, i+1, n)
			}
		}
		if len(img.LayerDisks) != 0 && len(img.LayerDisks) != len(img.Layers) {
			return nil, fmt.Errorf("policy image %q pins %d layer disks for %d layers", ref, len(img.LayerDisks), len(img.Layers))
		}
		for i, d := range img.LayerDisks {
			if len(d.RootHash) != 64 || strings.Trim(d.RootHash, "0123456789abcdef") != "" || d.DataBlocks < 1 {
				return nil, fmt.Errorf("policy image %q: layer disk %d is not a sha256 root hash and a block count", ref, i+1)
			}
		}
		if img.Digest == "" && len(img.SignedBy) == 0 {
			return nil, fmt.Errorf("policy image %q pins neither a digest nor a signer", ref)
		}
		for i, s := range img.SignedBy {
			if s.Key == "" && (s.Issuer == "" || s.TrustedRoot == "" || (s.Identity == "" && s.IdentityRegexp == "")) {
				return nil, fmt.Errorf("policy image %q: signer %d names neither a key nor an identity, issuer and trusted root", ref, i+1)
			}
		}
		if k := img.DecryptionKey; k != "" && !strings.HasPrefix(k, "kbs:///") {
			return nil, fmt.Errorf("policy image %q: decryption_key %q is not a kbs:/// resource", ref, k)
		}
	}
	for name, c := range p.Containers {
		if c == nil {
			return nil, fmt.Errorf("policy container %q is empty", name)
		}
		if _, ok := p.Images[c.Image]; !ok {
			return nil, fmt.Errorf("policy container %q names image %q, which the policy does not pin", name, c.Image)
		}
	}
	return &p, nil
}

// Hash is the policy's hash as the hardware carries it: SHA-256 for SNP and
// sim (HOST_DATA), SHA-384 for TDX (MRCONFIGID).
func Hash(text []byte, kind tee.Kind) []byte {
	if kind == tee.TDX {
		h := sha512.Sum384(text)
		return h[:]
	}
	h := sha256.Sum256(text)
	return h[:]
}

// HashHex is Hash in hex.
func HashHex(text []byte, kind tee.Kind) string { return hex.EncodeToString(Hash(text, kind)) }
