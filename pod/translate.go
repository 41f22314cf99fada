package pod

import (
	"cocoon.dev/cocoon/kbs/protocol"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/volume"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func translate(p *Pod, k *corev1.Pod, prefix string, opts Options) error {
	p.Name = k.Name
	if p.Name == "" && k.GenerateName != "" {
		p.Name = strings.TrimSuffix(k.GenerateName, "-") + "-" + randSuffix()
	}
	if p.Name == "" {
		return fmt.Errorf("%smetadata.name is required", prefix)
	}
	if !dnsLabel.MatchString(p.Name) {
		return fmt.Errorf("%smetadata.name %q must be a DNS label (lowercase letters, digits and '-', at most 63 characters)", prefix, p.Name)
	}
	p.Annotations = k.Annotations
	spec := k.Spec
	if psc := spec.SecurityContext; psc != nil && len(psc.Sysctls) > 0 {
		p.Sysctls = map[string]string{}
		for _, s := range psc.Sysctls {
			p.Sysctls[s.Name] = s.Value
		}
	}
	p.Hostname = spec.Hostname
	if p.Hostname == "" && prefix == "" {
		p.Hostname = p.Name
	}
	// A workload's pod template (Deployment, StatefulSet, ...) leaves it
	// empty: each replica's hostname is its pod name, which the controller
	// picks; the policy then admits any.
	if p.Hostname != "" && !dnsLabel.MatchString(p.Hostname) {
		return fmt.Errorf("%sspec.hostname %q must be a DNS label", prefix, p.Hostname)
	}
	switch spec.RestartPolicy {
	case "":
		p.RestartPolicy = corev1.RestartPolicyAlways
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
		p.RestartPolicy = spec.RestartPolicy
	default:
		return fmt.Errorf("%sspec.restartPolicy %q must be Always, OnFailure or Never", prefix, spec.RestartPolicy)
	}
	p.GracePeriod = 30 * time.Second
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		if *g < 0 {
			return fmt.Errorf("%sspec.terminationGracePeriodSeconds must not be negative", prefix)
		}
		p.GracePeriod = time.Duration(*g) * time.Second
	}
	vols, readOnly := map[string]bool{}, map[string]bool{}
	for i, v := range spec.Volumes {
		at := fmt.Sprintf("%sspec.volumes[%d]", prefix, i)
		if !dnsLabel.MatchString(v.Name) {
			return fmt.Errorf("%s.name %q must be a DNS label", at, v.Name)
		}
		if vols[v.Name] {
			return fmt.Errorf("%s.name %q is declared twice", at, v.Name)
		}
		if v.Secret != nil {
			sv, err := secretVolume(at, v, opts)
			if err != nil {
				return err
			}
			vols[v.Name], readOnly[v.Name] = true, true
			p.Sealed = append(p.Sealed, sv)
			continue
		}
		if v.CSI != nil {
			ev, err := encryptedVolume(at, v)
			if err != nil {
				return err
			}
			vols[v.Name] = true
			p.Encrypted = append(p.Encrypted, ev)
			continue
		}
		if v.EmptyDir == nil {
			return fmt.Errorf("%s (%q): only emptyDir, csi (driver %s) and secret (of sealed secrets) volumes are supported", at, v.Name, EncryptedDriver)
		}
		if m := v.EmptyDir.Medium; m != corev1.StorageMediumDefault && m != corev1.StorageMediumMemory {
			return fmt.Errorf("%s.emptyDir.medium %q is %w; use \"\" or Memory", at, m, ErrUnsupported)
		}
		ed := &agentv1.EmptyDir{Name: v.Name}
		if v.EmptyDir.SizeLimit != nil {
			ed.SizeLimitBytes = v.EmptyDir.SizeLimit.Value()
		}
		vols[v.Name] = true
		p.Volumes = append(p.Volumes, ed)
	}
	if len(spec.Containers) == 0 {
		return fmt.Errorf("%sspec.containers is empty: a pod needs at least one container", prefix)
	}
	names := map[string]bool{}
	for i, c := range spec.InitContainers {
		at := fmt.Sprintf("%sspec.initContainers[%d]", prefix, i)
		kind := KindInit
		if c.RestartPolicy != nil {
			if *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				return fmt.Errorf("%s.restartPolicy %q: only Always (a sidecar) is allowed on an init container", at, *c.RestartPolicy)
			}
			kind = KindSidecar
		}
		cs, err := container(at, &c, &spec, vols, readOnly, names, opts)
		if err != nil {
			return err
		}
		p.Init = append(p.Init, Container{Kind: kind, Spec: cs})
	}
	for i, c := range spec.Containers {
		at := fmt.Sprintf("%sspec.containers[%d]", prefix, i)
		cs, err := container(at, &c, &spec, vols, readOnly, names, opts)
		if err != nil {
			return err
		}
		p.Main = append(p.Main, Container{Kind: KindMain, Spec: cs})
	}
	return nil
}

func container(at string, c *corev1.Container, spec *corev1.PodSpec, vols, readOnly, names map[string]bool, opts Options) (*agentv1.ContainerSpec, error) {
	if !dnsLabel.MatchString(c.Name) {
		return nil, fmt.Errorf("%s.name %q must be a DNS label", at, c.Name)
	}
	if names[c.Name] {
		return nil, fmt.Errorf("%s.name %q is used by another container of the pod", at, c.Name)
	}
	names[c.Name] = true
	if c.Image == "" {
		return nil, fmt.Errorf("%s (%q): image is required", at, c.Name)
	}
	out := &agentv1.ContainerSpec{Name: c.Name, Image: c.Image, WorkingDir: c.WorkingDir}
	if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
		return nil, fmt.Errorf("%s.workingDir %q must be an absolute path", at, c.WorkingDir)
	}
	env := map[string]string{}
	for i, e := range c.Env {
		if e.Name == "" || strings.ContainsAny(e.Name, "=\x00") {
			return nil, fmt.Errorf("%s.env[%d].name %q is not a valid variable name", at, i, e.Name)
		}
		v := expand(e.Value, env)
		if e.ValueFrom != nil {
			var err error
			if v, err = secretEnv(fmt.Sprintf("%s.env[%d]", at, i), e, opts); err != nil {
				return nil, err
			}
		}
		env[e.Name] = v
		out.Env = append(out.Env, &agentv1.EnvVar{Name: e.Name, Value: v})
	}
	for _, s := range c.Command {
		out.Command = append(out.Command, expand(s, env))
	}
	for _, s := range c.Args {
		out.Args = append(out.Args, expand(s, env))
	}
	for i, m := range c.VolumeMounts {
		if !vols[m.Name] {
			return nil, fmt.Errorf("%s.volumeMounts[%d]: volume %q is not declared in spec.volumes", at, i, m.Name)
		}
		if !path.IsAbs(m.MountPath) || strings.Contains("/"+m.MountPath+"/", "/../") {
			return nil, fmt.Errorf("%s.volumeMounts[%d].mountPath %q must be an absolute path without \"..\"", at, i, m.MountPath)
		}
		if m.SubPath != "" && (path.IsAbs(m.SubPath) || strings.Contains("/"+m.SubPath+"/", "/../")) {
			return nil, fmt.Errorf("%s.volumeMounts[%d].subPath %q must be relative without \"..\"", at, i, m.SubPath)
		}
		// A Secret volume is mounted read-only, as kubelet mounts it.
		out.Mounts = append(out.Mounts, &agentv1.VolumeMount{Volume: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly || readOnly[m.Name], SubPath: m.SubPath})
	}
	if lim := c.Resources.Limits; lim != nil {
		r := &agentv1.Resources{}
		if q, ok := lim[corev1.ResourceMemory]; ok {
			r.MemoryLimitBytes = q.Value()
		}
		if q, ok := lim[corev1.ResourceCPU]; ok {
			r.CpuLimitMillis = q.MilliValue()
		}
		out.Resources = r
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		out.SharePidNamespace = true
	}
	out.Stdin, out.Tty = c.Stdin, c.TTY
	// Pod-level security context first, container-level wins.
	if psc := spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			out.HasRunAsUser, out.RunAsUser = true, *psc.RunAsUser
		}
		if psc.RunAsGroup != nil {
			out.HasRunAsGroup, out.RunAsGroup = true, *psc.RunAsGroup
		}
		if psc.RunAsNonRoot != nil {
			out.RunAsNonRoot = *psc.RunAsNonRoot
		}
		// The runtime gives the process the pod's supplementalGroups and
		// fsGroup as supplementary groups (kubelet passes both).
		groups := append([]int64{}, psc.SupplementalGroups...)
		if psc.FSGroup != nil {
			groups = append(groups, *psc.FSGroup)
		}
		for _, g := range groups {
			if !slices.Contains(out.SupplementalGroups, g) {
				out.SupplementalGroups = append(out.SupplementalGroups, g)
			}
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			out.HasRunAsUser, out.RunAsUser = true, *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			out.HasRunAsGroup, out.RunAsGroup = true, *sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			out.RunAsNonRoot = *sc.RunAsNonRoot
		}
		if sc.ReadOnlyRootFilesystem != nil {
			out.ReadOnlyRootFilesystem = *sc.ReadOnlyRootFilesystem
		}
		if sc.Privileged != nil {
			out.Privileged = *sc.Privileged
		}
		if sc.AllowPrivilegeEscalation != nil {
			out.NoNewPrivileges = !*sc.AllowPrivilegeEscalation
		}
		if caps := sc.Capabilities; caps != nil {
			for _, a := range caps.Add {
				out.CapabilitiesAdd = append(out.CapabilitiesAdd, string(a))
			}
			for _, d := range caps.Drop {
				out.CapabilitiesDrop = append(out.CapabilitiesDrop, string(d))
			}
		}
	}
	if out.HasRunAsUser && out.RunAsUser < 0 {
		return nil, fmt.Errorf("%s: runAsUser must not be negative", at)
	}
	var podProfile, ctrProfile *corev1.SeccompProfile
	if spec.SecurityContext != nil {
		podProfile = spec.SecurityContext.SeccompProfile
	}
	if c.SecurityContext != nil {
		ctrProfile = c.SecurityContext.SeccompProfile
	}
	profile, err := seccompProfile(at, podProfile, ctrProfile, out, opts)
	if err != nil {
		return nil, err
	}
	out.SeccompProfile = profile
	if out.HasRunAsGroup && out.RunAsGroup < 0 {
		return nil, fmt.Errorf("%s: runAsGroup must not be negative", at)
	}
	return out, nil
}

// expand replaces $(VAR) with the value of VAR defined earlier, as
// Kubernetes does; $$(VAR) becomes a literal $(VAR) and unknown references
// stay as written.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// EncryptedDriver is the CSI driver name of cocoon's encrypted volumes.
const EncryptedDriver = "volume.cocoon.dev"

func encryptedVolume(at string, v corev1.Volume) (*agentv1.EncryptedVolume, error) {
	c := v.CSI
	if c.Driver != EncryptedDriver {
		return nil, fmt.Errorf("%s.csi.driver %q is not supported; cocoon's encrypted volumes use %q", at, c.Driver, EncryptedDriver)
	}
	ev := &agentv1.EncryptedVolume{Name: v.Name}
	for k, val := range c.VolumeAttributes {
		switch k {
		case "source":
			ev.Source = val
		case "key":
			ev.KeyUri = val
		default:
			return nil, fmt.Errorf("%s.csi.volumeAttributes.%s is not supported (use source and key)", at, k)
		}
	}
	if c.ReadOnly != nil {
		ev.ReadOnly = *c.ReadOnly
	}
	if volume.IsURL(ev.Source) {
		u, err := url.Parse(ev.Source)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%s.csi.volumeAttributes.source: %q is not a valid http(s) URL", at, ev.Source)
		}
		if !ev.ReadOnly {
			return nil, fmt.Errorf("%s: an image on an http(s) URL is read with range requests and cannot be written: set csi.readOnly: true", at)
		}
	} else if scheme, _, ok := strings.Cut(ev.Source, "://"); ok {
		return nil, fmt.Errorf("%s.csi.volumeAttributes.source: %s:// is not supported: give the image's path or an http(s) URL", at, scheme)
	} else if ev.Source == "" || strings.Contains("/"+ev.Source+"/", "/../") {
		return nil, fmt.Errorf("%s.csi.volumeAttributes.source must be the image's path (without \"..\") or an http(s) URL", at)
	}
	ks, err := volume.ParseKeyURI(ev.KeyUri)
	if err != nil {
		return nil, fmt.Errorf("%s.csi.volumeAttributes.key: %w", at, err)
	}
	if _, _, _, err := protocol.ParseURI(ks.Resource); err != nil {
		return nil, fmt.Errorf("%s.csi.volumeAttributes.key: %w", at, err)
	}
	return ev, nil
}
