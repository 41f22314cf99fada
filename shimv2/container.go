package shimv2

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/resolve"
)

// The annotations containerd's CRI plugin puts on the runtime specs it makes.
const (
	annContainerType = "io.kubernetes.cri.container-type"
	annSandboxID     = "io.kubernetes.cri.sandbox-id"
	annSandboxName   = "io.kubernetes.cri.sandbox-name"
	annContainerName = "io.kubernetes.cri.container-name"
	annImageName     = "io.kubernetes.cri.image-name"

	typeSandbox   = "sandbox"
	typeContainer = "container"
)

// maxSpecBytes bounds a bundle's config.json.
const maxSpecBytes = 4 << 20

// readSpec reads the runtime spec containerd wrote into bundle.
func readSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSpecBytes+1))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if len(b) > maxSpecBytes {
		return nil, fmt.Errorf("bundle config.json is larger than %d bytes", maxSpecBytes)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("bundle config.json: %w", err)
	}
	return &s, nil
}

// errNotCRI is returned for a task that containerd's CRI plugin did not
// make (ctr run, nerdctl without CRI): cocoon runs Kubernetes pods.
var errNotCRI = errors.New("the cocoon runtime runs Kubernetes pods: this container has no " + annContainerType +
	" annotation (was it started with ctr or nerdctl rather than through the CRI, by kubelet or crictl?)")

// netNS is the path of the network namespace the spec joins, or "".
func netNS(s *specs.Spec) string {
	if s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// Mount destinations the agent provides itself in every container: the
// runtime's defaults and the files the CRI bind-mounts from the host
// (/etc/hosts, /etc/hostname, /etc/resolv.conf, /dev/shm,
// /dev/termination-log). The host's copies are never mounted: the agent
// writes its own, from the policy's hostname.
var agentMounts = []string{
	"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/dev/shm", "/sys", "/sys/fs/cgroup",
	"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log",
}

// kubeletVolume returns the pod volume a kubelet host path stands for:
// .../pods/UID/volumes/kubernetes.io~empty-dir/NAME (emptyDir),
// .../volumes/kubernetes.io~secret/NAME (a Secret volume: the agent's
// holds the sealed values released, kubelet's only their references) or
// .../volumes/kubernetes.io~csi/NAME/mount (a CSI volume, such as cocoon's
// encrypted volumes). Only the name reaches the agent, which mounts its own
// volume of that name; the host directory is never used.
func kubeletVolume(src string) (string, bool) {
	src = path.Clean(src)
	dir, name := path.Dir(src), path.Base(src)
	if (path.Base(dir) == "kubernetes.io~empty-dir" || path.Base(dir) == "kubernetes.io~secret") && path.Base(path.Dir(dir)) == "volumes" {
		return name, true
	}
	if name == "mount" && path.Base(path.Dir(dir)) == "kubernetes.io~csi" && path.Base(path.Dir(path.Dir(dir))) == "volumes" {
		return path.Base(dir), true
	}
	return "", false
}

// containerSpec turns the CRI's runtime spec for a container into the agent
// request that the policy judges. pc is the policy's entry for the
// container (nil when the policy has none: the agent then denies it).
//
// The command line and environment are passed as the CRI resolved them
// (entrypoint and cmd merged; image, pod and kubelet variables): the policy
// pins the resolved line and the exact variables, so the agent's own
// resolution from the pinned image config must agree with them. The user
// is passed only when the policy pins one (or has no entry for the
// container): otherwise the agent takes the image's, as the generator
// recorded it.
func containerSpec(s *specs.Spec, pc *policy.Container) (*agentv1.ContainerSpec, error) {
	name := s.Annotations[annContainerName]
	image := s.Annotations[annImageName]
	if name == "" || image == "" {
		return nil, fmt.Errorf("container spec lacks %s or %s", annContainerName, annImageName)
	}
	p := s.Process
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("container %q: no process", name)
	}
	c := &agentv1.ContainerSpec{
		Name: name, Image: image, Command: slices.Clone(p.Args), WorkingDir: p.Cwd,
		NoNewPrivileges: p.NoNewPrivileges, Tty: p.Terminal,
	}
	// The CRI gives a container of a pod that shares its PID namespace
	// (shareProcessNamespace; crictl's default) the sandbox's: the agent
	// has one of its own for the pod.
	if s.Linux != nil {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.PIDNamespace && ns.Path != "" {
				c.SharePidNamespace = true
			}
		}
	}
	for _, kv := range p.Env {
		k, v, _ := strings.Cut(kv, "=")
		c.Env = append(c.Env, &agentv1.EnvVar{Name: k, Value: v})
	}
	// Without a policy entry (an allow-all policy) the CRI's user is the
	// request: passed as it is.
	if pc == nil || pc.RunAsUser >= 0 {
		c.HasRunAsUser, c.RunAsUser = true, int64(p.User.UID)
	}
	if pc == nil || pc.RunAsGroup >= 0 {
		c.HasRunAsGroup, c.RunAsGroup = true, int64(p.User.GID)
	}
	if pc != nil {
		c.RunAsNonRoot = pc.RunAsNonRoot
	}
	for _, g := range p.User.AdditionalGids {
		// containerd lists the primary group too; it is not supplementary.
		if g != p.User.GID && !slices.Contains(c.SupplementalGroups, int64(g)) {
			c.SupplementalGroups = append(c.SupplementalGroups, int64(g))
		}
	}
	if s.Root != nil {
		c.ReadOnlyRootFilesystem = s.Root.Readonly
	}
	if s.Linux != nil {
		// The agent keeps its own defaults and adds these (they only
		// restrict); the settings the sandbox does not honour are refused
		// rather than ignored.
		c.MaskedPaths, c.ReadonlyPaths = s.Linux.MaskedPaths, s.Linux.ReadonlyPaths
		if s.Linux.Seccomp != nil {
			// The profile containerd resolved (RuntimeDefault or a
			// Localhost file): the agent applies its canonical form and
			// the policy pins that form's digest.
			b, err := json.Marshal(s.Linux.Seccomp)
			if err != nil {
				return nil, fmt.Errorf("container %q: seccomp profile: %w", name, err)
			}
			c.SeccompProfile = b
		}
		if len(s.Linux.Sysctl) > 0 {
			return nil, fmt.Errorf("container %q: sysctls (the pod's securityContext.sysctls) are not supported yet by the cocoon runtime", name)
		}
	}
	if p.Capabilities != nil {
		c.CapabilitiesAdd, c.CapabilitiesDrop = capsDelta(p.Capabilities.Bounding)
	}
	if s.Linux != nil && s.Linux.Resources != nil {
		r := s.Linux.Resources
		res := &agentv1.Resources{}
		if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
			res.MemoryLimitBytes = *r.Memory.Limit
		}
		if r.CPU != nil && r.CPU.Quota != nil && *r.CPU.Quota > 0 && r.CPU.Period != nil && *r.CPU.Period > 0 {
			res.CpuLimitMillis = *r.CPU.Quota * 1000 / int64(*r.CPU.Period)
		}
		if res.MemoryLimitBytes != 0 || res.CpuLimitMillis != 0 {
			c.Resources = res
		}
	}
	for _, m := range s.Mounts {
		if path.Clean(m.Destination) == "/etc/resolv.conf" {
			// The pod's DNS (kubelet's dnsPolicy/dnsConfig) as the CRI
			// wrote it: its content goes to the agent, which checks and
			// writes its own file; the host's file is not mounted.
			d, err := readResolvConf(m.Source)
			if err != nil {
				return nil, fmt.Errorf("container %q: %w", name, err)
			}
			c.Dns = d
			continue
		}
		if slices.Contains(agentMounts, path.Clean(m.Destination)) {
			continue
		}
		vol, ok := kubeletVolume(m.Source)
		if !ok || (m.Type != "bind" && m.Type != "") {
			return nil, fmt.Errorf("container %q: mount of %s at %s is refused: a sandbox mounts no host path (the TEE cannot trust its contents); use an emptyDir or an encrypted volume", name, m.Source, m.Destination)
		}
		c.Mounts = append(c.Mounts, &agentv1.VolumeMount{Volume: vol, MountPath: m.Destination, ReadOnly: slices.Contains(m.Options, "ro")})
	}
	return c, nil
}

// capsDelta expresses a capability set as additions to and removals from
// the default set, as a pod spec does.
func capsDelta(set []string) (add, drop []string) {
	def := resolve.DefaultCaps()
	for _, c := range set {
		if !slices.Contains(def, c) {
			add = append(add, c)
		}
	}
	for _, c := range def {
		if !slices.Contains(set, c) {
			drop = append(drop, c)
		}
	}
	return add, drop
}

// checkNamespaces refuses what a sandbox cannot give: the host's network,
// PID or IPC namespace (hostNetwork, hostPID, hostIPC), which the CRI asks
// for by leaving the namespace out of the runtime spec, and a PID namespace
// shared by the pod (shareProcessNamespace).
func checkNamespaces(s *specs.Spec, sandbox bool) error {
	has := map[specs.LinuxNamespaceType]string{}
	if s.Linux != nil {
		for _, ns := range s.Linux.Namespaces {
			has[ns.Type] = ns.Path
		}
	}
	if _, ok := has[specs.PIDNamespace]; !ok {
		return errors.New("hostPID: true is refused: a cocoon sandbox never shares the host's PID namespace")
	}
	if _, ok := has[specs.IPCNamespace]; !ok {
		return errors.New("hostIPC: true is refused: a cocoon sandbox never shares the host's IPC namespace")
	}
	if p, ok := has[specs.NetworkNamespace]; !ok || (sandbox && p == "") {
		return errors.New("hostNetwork: true is refused: a cocoon sandbox has its own network namespace (the pod's), never the host's")
	}
	return nil
}

// readResolvConf reads the resolv.conf the CRI made for the pod: its
// nameserver, search and options lines.
func readResolvConf(p string) (*agentv1.DNSConfig, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("the pod's resolv.conf: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("the pod's resolv.conf: %w", err)
	}
	d := &agentv1.DNSConfig{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			d.Servers = append(d.Servers, f[1])
		case "search":
			d.Searches = f[1:]
		case "options":
			d.Options = append(d.Options, f[1:]...)
		}
	}
	return d, nil
}
