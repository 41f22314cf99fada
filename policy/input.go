package policy

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/resolve"
	"cocoon.dev/cocoon/tee"
)

// State is what the engine knows of containers: created (and not removed)
// and started ones.
type State struct {
	Created map[string]bool `json:"created"`
	Running map[string]bool `json:"running"`
}

// PulledImage is what the agent verified when it pulled an image.
type PulledImage struct {
	Digest       string `json:"digest"`
	ConfigDigest string `json:"config_digest"`
	// Signer is the policy signer whose signature of the image the agent
	// verified ("" when the policy pins the image by digest).
	Signer string `json:"signer,omitempty"`
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// Input builds the input document of method's enforcement point from the
// request: what the agent will really do, with the command line and the
// environment resolved as the runtime resolves them (from the policy's copy
// of the pinned image config). hostname is the sandbox's.
//
// Every field of every request is in the input (TestEveryRequestFieldIsPoliced
// walks the API's descriptor to hold this), or the request is refused here
// when a field is set that the agent would ignore.
func Input(p *Policy, method string, req any, st *State, pulled map[string]PulledImage, hostname string) (map[string]any, error) {
	switch r := req.(type) {
	case *agentv1.CreateSandboxRequest:
		vols := []any{}
		for _, v := range r.GetVolumes() {
			vols = append(vols, map[string]any{"name": v.GetName(), "size_limit_bytes": v.GetSizeLimitBytes()})
		}
		host := r.GetHostname()
		if host == "" {
			host = r.GetName()
		}
		enc := []any{}
		for _, v := range r.GetEncryptedVolumes() {
			enc = append(enc, map[string]any{"name": v.GetName(), "source": v.GetSource(), "key": v.GetKeyUri(), "read_only": v.GetReadOnly()})
		}
		sealedVols := []any{}
		for _, v := range r.GetSealedVolumes() {
			files := []any{}
			fs := slices.Clone(v.GetFiles())
			slices.SortFunc(fs, func(a, b *agentv1.SealedFile) int { return strings.Compare(a.GetPath(), b.GetPath()) })
			for _, f := range fs {
				files = append(files, map[string]any{"path": f.GetPath(), "value": f.GetValue(), "mode": int64(f.GetMode())})
			}
			sealedVols = append(sealedVols, map[string]any{"name": v.GetName(), "files": files})
		}
		// The network is the host's to decide (addresses, routes): it is
		// in the input, and the framework admits any.
		ifs, routes := []any{}, []any{}
		for _, i := range r.GetNetwork().GetInterfaces() {
			ifs = append(ifs, map[string]any{"mac": i.GetMac(), "addresses": strs(i.GetAddresses())})
		}
		for _, rt := range r.GetNetwork().GetRoutes() {
			routes = append(routes, map[string]any{"destination": rt.GetDestination(), "gateway": rt.GetGateway()})
		}
		sysctls := map[string]any{}
		for k, v := range r.GetSysctls() {
			sysctls[k] = v
		}
		return map[string]any{"name": r.GetName(), "hostname": host, "volumes": vols, "encrypted_volumes": enc, "sealed_volumes": sealedVols,
			"policy_sha256": HashHex(r.GetPolicy(), tee.Sim), "network": map[string]any{"interfaces": ifs, "routes": routes},
			"sysctls": sysctls}, nil
	case *agentv1.PullImageRequest:
		// The mirror is where the bytes come from, not what is pulled: the
		// image is verified against its pinned digests wherever it is
		// fetched, so the framework allows any; it is in the input so that
		// a policy rule could still judge it.
		return map[string]any{"image": r.GetImage(), "mirror": r.GetMirror()}, nil
	case *agentv1.CreateContainerRequest:
		return createInput(p, r.GetSpec(), st, pulled, hostname)
	case *agentv1.StartContainerRequest:
		return containerInput(r.GetContainer(), st), nil
	case *agentv1.RemoveContainerRequest:
		in := containerInput(r.GetContainer(), st)
		in["exec_id"] = r.GetExecId()
		return in, nil
	case *agentv1.ExecProcessRequest:
		in := containerInput(r.GetContainer(), st)
		in["args"] = strs(r.GetArgs())
		env := []any{}
		for _, e := range r.GetEnv() {
			env = append(env, e.GetName()+"="+e.GetValue())
		}
		in["env"] = env
		in["working_dir"] = r.GetWorkingDir()
		in["stdin"] = len(r.GetStdin()) > 0 || r.GetOpenStdin()
		in["stdin_bytes"] = len(r.GetStdin())
		in["open_stdin"] = r.GetOpenStdin()
		in["timeout_seconds"] = int(r.GetTimeoutSeconds())
		// A terminal and detaching change how the host talks to the
		// process, not what runs: in the input, admitted by the
		// framework.
		in["terminal"], in["detach"] = r.GetTerminal(), r.GetDetach()
		return in, nil
	case *agentv1.SignalContainerRequest:
		in := containerInput(r.GetContainer(), st)
		in["signal"] = int(r.GetSignal())
		in["all"] = r.GetAll()
		in["exec_id"] = r.GetExecId()
		return in, nil
	case *agentv1.ReadLogsRequest:
		in := containerInput(r.GetContainer(), st)
		in["offset"], in["max_bytes"], in["wait_ms"], in["streams"] = r.GetOffset(), int(r.GetMaxBytes()), int(r.GetWaitMs()), r.GetStreams()
		in["exec_id"] = r.GetExecId()
		return in, nil
	case *agentv1.WaitContainerRequest:
		in := containerInput(r.GetContainer(), st)
		in["timeout_ms"] = int(r.GetTimeoutMs())
		in["exec_id"] = r.GetExecId()
		return in, nil
	case *agentv1.WriteStdinRequest:
		in := containerInput(r.GetContainer(), st)
		in["exec_id"], in["bytes"], in["close"] = r.GetExecId(), len(r.GetData()), r.GetClose()
		return in, nil
	case *agentv1.ResizeTerminalRequest:
		in := containerInput(r.GetContainer(), st)
		in["exec_id"], in["width"], in["height"] = r.GetExecId(), int(r.GetWidth()), int(r.GetHeight())
		return in, nil
	case *agentv1.StatsRequest:
		return containerInput(r.GetContainer(), st), nil
	case *agentv1.PullProgressRequest:
		return map[string]any{"image": r.GetImage()}, nil
	case *agentv1.GetEvidenceRequest:
		return map[string]any{"runtime_data": hex.EncodeToString(r.GetRuntimeData()), "binding": r.GetBinding().String()}, nil
	case *agentv1.ListContainersRequest, *agentv1.ShutdownRequest:
		return map[string]any{}, nil
	}
	return nil, fmt.Errorf("%s: no policy input for request type %T", method, req)
}

func containerInput(name string, st *State) map[string]any {
	return map[string]any{"container": name, "state": map[string]any{"created": st.Created[name], "running": st.Running[name]}}
}

func createInput(p *Policy, s *agentv1.ContainerSpec, st *State, pulled map[string]PulledImage, hostname string) (map[string]any, error) {
	// Fields the agent reads only with their flag: a value without it would
	// be ignored, so it is refused rather than silently unpoliced.
	if !s.GetHasRunAsUser() && s.GetRunAsUser() != 0 {
		return nil, fmt.Errorf("container %q: run_as_user is set without has_run_as_user", s.GetName())
	}
	if !s.GetHasRunAsGroup() && s.GetRunAsGroup() != 0 {
		return nil, fmt.Errorf("container %q: run_as_group is set without has_run_as_group", s.GetName())
	}
	seccomp := ""
	if b := s.GetSeccompProfile(); len(b) > 0 {
		_, d, err := SeccompProfile(b)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", s.GetName(), err)
		}
		seccomp = d
	}
	img := p.Images[s.GetImage()] // zero when the image is not in the policy
	caps, err := resolve.Caps(s.GetCapabilitiesAdd(), s.GetCapabilitiesDrop())
	if err != nil {
		caps = append(append([]string{"<invalid>"}, s.GetCapabilitiesAdd()...), s.GetCapabilitiesDrop()...)
	}
	mounts := []any{}
	for _, m := range MountsOf(s.GetMounts()) {
		mounts = append(mounts, map[string]any{"volume": m.Volume, "path": m.Path, "read_only": m.ReadOnly, "sub_path": m.SubPath})
	}
	user, group := int64(-1), int64(-1)
	if s.GetHasRunAsUser() {
		user = s.GetRunAsUser()
	}
	if s.GetHasRunAsGroup() {
		group = s.GetRunAsGroup()
	}
	pi := pulled[s.GetImage()]
	env := resolve.Env(img.Env, EnvOf(s.GetEnv()), hostname)
	res := ResourcesOf(s.GetResources())
	return map[string]any{
		"name": s.GetName(), "image": s.GetImage(),
		"image_digest": pi.Digest, "config_digest": pi.ConfigDigest, "image_signer": pi.Signer,
		"args":        strs(resolve.Args(s.GetCommand(), s.GetArgs(), img.Entrypoint, img.Cmd)),
		"env":         strs(env),
		"working_dir": WorkingDir(s.GetWorkingDir(), img.WorkingDir),
		"run_as_user": user, "run_as_group": group, "run_as_non_root": s.GetRunAsNonRoot(),
		"read_only_root_filesystem": s.GetReadOnlyRootFilesystem(), "no_new_privileges": s.GetNoNewPrivileges(),
		"share_pid_namespace": s.GetSharePidNamespace(),
		"stdin":               s.GetStdin(), "tty": s.GetTty(),
		// The seccomp profile's digest (its canonical form, which the
		// agent applies); "" for none.
		"seccomp":             seccomp,
		"supplemental_groups": nums(s.GetSupplementalGroups()),
		// More masked and read-only paths only restrict the container: in
		// the input, admitted by the framework.
		"masked_paths": strs(s.GetMaskedPaths()), "readonly_paths": strs(s.GetReadonlyPaths()),
		// The DNS configuration is the host's to decide, as the network
		// is: in the input, admitted by the framework.
		"dns":        map[string]any{"servers": strs(s.GetDns().GetServers()), "searches": strs(s.GetDns().GetSearches()), "options": strs(s.GetDns().GetOptions())},
		"privileged": s.GetPrivileged(), "capabilities": strs(caps), "mounts": mounts,
		"resources": map[string]any{"memory_limit_bytes": res.MemoryLimitBytes, "cpu_limit_millis": res.CPULimitMillis},
		"state":     map[string]any{"created": st.Created[s.GetName()]},
	}, nil
}

// ResourcesOf converts API resource limits (nil: none).
func ResourcesOf(r *agentv1.Resources) Resources {
	return Resources{MemoryLimitBytes: r.GetMemoryLimitBytes(), CPULimitMillis: r.GetCpuLimitMillis()}
}

// WorkingDir is the working directory a container runs in: the spec's, else
// the image's, else "/".
func WorkingDir(spec, image string) string {
	switch {
	case spec != "":
		return spec
	case image != "":
		return image
	}
	return "/"
}

// EnvOf converts API env vars.
func EnvOf(env []*agentv1.EnvVar) []resolve.EnvVar {
	out := make([]resolve.EnvVar, len(env))
	for i, e := range env {
		out[i] = resolve.EnvVar{Name: e.GetName(), Value: e.GetValue()}
	}
	return out
}

// MountsOf converts API volume mounts.
func MountsOf(ms []*agentv1.VolumeMount) []Mount {
	out := make([]Mount, 0, len(ms))
	for _, m := range ms {
		out = append(out, Mount{Volume: m.GetVolume(), Path: m.GetMountPath(), ReadOnly: m.GetReadOnly(), SubPath: m.GetSubPath()})
	}
	return out
}

func nums(n []int64) []any {
	out := make([]any, len(n))
	for i, x := range n {
		out[i] = x
	}
	return out
}
