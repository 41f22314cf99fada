package agent

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/resolve"
)

func envPairs(env []*agentv1.EnvVar) []resolve.EnvVar {
	out := make([]resolve.EnvVar, len(env))
	for i, e := range env {
		out[i] = resolve.EnvVar{Name: e.GetName(), Value: e.GetValue()}
	}
	return out
}

// maxExtraPaths bounds the masked and read-only paths a request adds.
const maxExtraPaths = 64

// podFiles are the per-pod files bind-mounted into every container.
type podFiles struct {
	hosts, hostname, resolv, shm string
}

// specInput is everything buildSpec needs.
type specInput struct {
	c        *agentv1.ContainerSpec
	img      *image.Image
	rootfs   string
	hostname string
	cgroup   string
	volumes  map[string]string // emptyDir name -> directory
	files    podFiles
	// apiSocket is the in-pod API socket to mount at PodAPISocket.
	apiSocket string
	// pidNS is the pod's shared PID namespace, for a container that
	// shares it.
	pidNS string
}

// cleanMountPath checks a container path: absolute, no "..".
func cleanMountPath(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("mount path %q is not absolute", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("mount path %q contains \"..\"", p)
		}
	}
	return path.Clean(p), nil
}

func buildSpec(in specInput) (*specs.Spec, error) {
	c := in.c
	args := resolve.Args(c.GetCommand(), c.GetArgs(), in.img.Config.Config.Entrypoint, in.img.Config.Config.Cmd)
	if len(args) == 0 {
		return nil, fmt.Errorf("container %q: no command: the image has no entrypoint or cmd and the pod spec gives none: %w", c.GetName(), errInvalid)
	}
	uid, gid, err := resolveUser(in.rootfs, in.img.Config.Config.User)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w: %w", c.GetName(), err, errInvalid)
	}
	if c.GetHasRunAsUser() {
		uid = uint32(c.GetRunAsUser())
	}
	if c.GetHasRunAsGroup() {
		gid = uint32(c.GetRunAsGroup())
	}
	var groups []uint32
	for _, g := range c.GetSupplementalGroups() {
		if g < 0 || g > 1<<31-1 {
			return nil, fmt.Errorf("container %q: supplemental group %d is not a group ID: %w", c.GetName(), g, errInvalid)
		}
		groups = append(groups, uint32(g))
	}
	if c.GetRunAsNonRoot() && uid == 0 {
		return nil, fmt.Errorf("container %q: runAsNonRoot is set but the container would run as root (uid 0); set runAsUser or use an image with a non-root USER: %w", c.GetName(), errInvalid)
	}
	caps, err := resolve.Caps(c.GetCapabilitiesAdd(), c.GetCapabilitiesDrop())
	if err != nil {
		return nil, fmt.Errorf("container %q: %w: %w", c.GetName(), err, errInvalid)
	}
	pcaps := &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	if uid != 0 {
		// Non-root processes get no effective capabilities (as containerd).
		pcaps.Effective, pcaps.Permitted = nil, nil
	}
	cwd := c.GetWorkingDir()
	if cwd == "" {
		cwd = in.img.Config.Config.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("container %q: workingDir %q is not absolute: %w", c.GetName(), cwd, errInvalid)
	}

	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: in.hostname,
		Root:     &specs.Root{Path: in.rootfs, Readonly: c.GetReadOnlyRootFilesystem()},
		Process: &specs.Process{
			Args:            args,
			Env:             resolve.Env(in.img.Config.Config.Env, envPairs(c.GetEnv()), in.hostname),
			Cwd:             cwd,
			User:            specs.User{UID: uid, GID: gid, AdditionalGids: groups},
			Capabilities:    pcaps,
			NoNewPrivileges: c.GetNoNewPrivileges(),
			Terminal:        c.GetTty(),
		},
		Mounts: defaultMounts(in.files),
		Linux: &specs.Linux{
			// Network and IPC namespaces are absent on purpose: containers
			// share the sandbox's (the pod network and IPC).
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace, Path: in.pidNS}, {Type: specs.MountNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.CgroupNamespace},
			},
			CgroupsPath: in.cgroup,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware", "/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	for _, x := range []struct {
		what string
		add  []string
		dst  *[]string
	}{{"masked path", c.GetMaskedPaths(), &s.Linux.MaskedPaths}, {"read-only path", c.GetReadonlyPaths(), &s.Linux.ReadonlyPaths}} {
		if len(x.add) > maxExtraPaths {
			return nil, fmt.Errorf("container %q: %d %ss; at most %d: %w", c.GetName(), len(x.add), x.what, maxExtraPaths, errInvalid)
		}
		for _, p := range x.add {
			cp, err := cleanMountPath(p)
			if err != nil {
				return nil, fmt.Errorf("container %q: %s %q: %w: %w", c.GetName(), x.what, p, err, errInvalid)
			}
			if !slices.Contains(*x.dst, cp) {
				*x.dst = append(*x.dst, cp)
			}
		}
	}
	if b := c.GetSeccompProfile(); len(b) > 0 {
		// The canonical form, whose digest the policy judged.
		sp, _, err := policy.SeccompProfile(b)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w: %w", c.GetName(), err, errInvalid)
		}
		s.Linux.Seccomp = sp
	}
	if r := c.GetResources(); r != nil {
		if m := r.GetMemoryLimitBytes(); m > 0 {
			s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &m}
		}
		if cpu := r.GetCpuLimitMillis(); cpu > 0 {
			period := uint64(100000)
			quota := cpu * 100
			s.Linux.Resources.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
		}
	}
	if in.apiSocket != "" {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: PodAPISocket, Type: "bind", Source: in.apiSocket, Options: []string{"bind"}})
	}
	for _, m := range c.GetMounts() {
		dst, err := cleanMountPath(m.GetMountPath())
		if err != nil {
			return nil, fmt.Errorf("container %q: volume %q: %w: %w", c.GetName(), m.GetVolume(), err, errInvalid)
		}
		src, ok := in.volumes[m.GetVolume()]
		if !ok {
			return nil, fmt.Errorf("container %q: volume %q is not a volume of this sandbox: %w", c.GetName(), m.GetVolume(), errInvalid)
		}
		if sp := m.GetSubPath(); sp != "" {
			clean := path.Clean("/" + sp)
			if strings.Contains(sp, "..") || path.IsAbs(sp) {
				return nil, fmt.Errorf("container %q: volume %q: subPath %q must be relative without \"..\": %w", c.GetName(), m.GetVolume(), sp, errInvalid)
			}
			src = filepath.Join(src, clean)
		}
		opts := []string{"rbind", "rprivate"}
		if m.GetReadOnly() {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts})
	}
	return s, nil
}

func defaultMounts(f podFiles) []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "bind", Source: f.shm, Options: []string{"rbind", "nosuid", "noexec", "nodev"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: f.hosts, Options: []string{"rbind", "ro"}},
		{Destination: "/etc/hostname", Type: "bind", Source: f.hostname, Options: []string{"rbind", "ro"}},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: f.resolv, Options: []string{"rbind", "ro"}},
	}
}
