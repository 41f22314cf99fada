package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/internal/spans"
)

// service implements agentv1.AgentService. Requests reach it only after the
// enforcement hook allowed them.
type service struct{ a *Agent }

var _ agentv1.AgentService = (*service)(nil)

func (s *service) CreateSandbox(ctx context.Context, req *agentv1.CreateSandboxRequest) (*agentv1.CreateSandboxResponse, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandbox != nil {
		return nil, fmt.Errorf("the sandbox was already created as %q: %w", a.sandbox.name, errExists)
	}
	if err := checkName("sandbox", req.GetName()); err != nil {
		return nil, err
	}
	host := req.GetHostname()
	if host == "" {
		host = req.GetName()
	}
	if err := checkName("hostname", host); err != nil {
		return nil, err
	}
	pod := filepath.Join(a.cfg.StateDir, "pod")
	files := podFiles{
		hosts: filepath.Join(pod, "hosts"), hostname: filepath.Join(pod, "hostname"),
		resolv: filepath.Join(pod, "resolv.conf"), shm: filepath.Join(pod, "shm"),
	}
	content := map[string]string{
		files.hosts:    fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", host),
		files.hostname: host + "\n",
		files.resolv:   "# cocoon sandbox: the pod network is loopback only\n",
	}
	for p, c := range content {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", filepath.Base(p), err)
		}
	}
	if err := os.MkdirAll(files.shm, 0o1777); err != nil {
		return nil, fmt.Errorf("create /dev/shm: %w", err)
	}
	vols := map[string]string{}
	for _, v := range req.GetVolumes() {
		if err := checkName("volume", v.GetName()); err != nil {
			return nil, err
		}
		if _, dup := vols[v.GetName()]; dup {
			return nil, fmt.Errorf("volume %q is declared twice: %w", v.GetName(), errInvalid)
		}
		dir := filepath.Join(a.cfg.StateDir, "volumes", v.GetName())
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return nil, fmt.Errorf("create volume %q: %w", v.GetName(), err)
		}
		if lim := v.GetSizeLimitBytes(); lim > 0 {
			if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0777", lim)); err != nil {
				return nil, fmt.Errorf("volume %q: mount tmpfs with sizeLimit: %w", v.GetName(), err)
			}
		}
		_ = os.Chmod(dir, 0o777)
		vols[v.GetName()] = dir
	}
	for _, v := range req.GetEncryptedVolumes() {
		if err := checkName("volume", v.GetName()); err != nil {
			return nil, err
		}
		if _, dup := vols[v.GetName()]; dup {
			return nil, fmt.Errorf("volume %q is declared twice: %w", v.GetName(), errInvalid)
		}
		a.mu.Unlock() // the key broker round trip must not hold the agent
		end := spans.Start(ctx, "encrypted volume "+v.GetName()+" opened (key from the broker)")
		dir, err := a.openEncrypted(ctx, v)
		end()
		a.mu.Lock()
		if err != nil {
			return nil, err
		}
		vols[v.GetName()] = dir
	}
	for _, v := range req.GetSealedVolumes() {
		if err := checkName("volume", v.GetName()); err != nil {
			return nil, err
		}
		if _, dup := vols[v.GetName()]; dup {
			return nil, fmt.Errorf("volume %q is declared twice: %w", v.GetName(), errInvalid)
		}
		a.mu.Unlock() // the key broker round trips must not hold the agent
		dir, err := a.openSealed(ctx, v)
		a.mu.Lock()
		if err != nil {
			return nil, err
		}
		vols[v.GetName()] = dir
	}
	if err := a.configureNetwork(ctx, req.GetNetwork()); err != nil {
		return nil, err
	}
	if err := a.applySysctls(req.GetSysctls()); err != nil {
		return nil, err
	}
	if a.cfg.SetHostname {
		if err := unix.Sethostname([]byte(host)); err != nil {
			return nil, fmt.Errorf("set hostname: %w", err)
		}
	}
	if err := a.startSKR(); err != nil {
		return nil, err
	}
	a.sandbox = &sandboxState{name: req.GetName(), hostname: host, volumes: vols, files: files}
	a.log.Info("sandbox created", "name", req.GetName(), "volumes", len(vols))
	return &agentv1.CreateSandboxResponse{}, nil
}

func (s *service) PullImage(ctx context.Context, req *agentv1.PullImageRequest) (*agentv1.PullImageResponse, error) {
	a := s.a
	ref := req.GetImage()
	a.mu.Lock()
	if a.sandbox == nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("create the sandbox first: %w", errState)
	}
	prog := a.pulls[ref]
	if prog == nil || prog.Snapshot().Done {
		prog = newProgress()
		a.pulls[ref] = prog
	}
	a.mu.Unlock()
	start := time.Now()
	from := ref
	var err error
	if a.cfg.FetchLocal != nil {
		if r, err := image.ParseRef(ref); err == nil && r.Transport != image.Registry {
			local, err := a.cfg.FetchLocal(ctx, r.Path)
			if err != nil {
				return nil, fmt.Errorf("pull: %w", err)
			}
			// The same source, from its copy (the reference starts with
			// the transport and the path).
			from = strings.Replace(ref, r.Path, local, 1)
		}
	}
	if m := req.GetMirror(); m != "" {
		if from, err = image.Mirrored(ref, m); err != nil {
			return nil, fmt.Errorf("pull: %w: %w", err, errInvalid)
		}
	}
	check, err := a.signatureCheck(ref)
	if err != nil {
		return nil, fmt.Errorf("pull: %w", err)
	}
	var checks []image.Check
	if check != nil {
		checks = append(checks, check)
	}
	keys := a.newLayerKeys(ref)
	defer keys.close()
	puller := *a.puller
	puller.LayerKey = keys.unwrap
	puller.LayerSource = a.layerSource(ref)
	img, err := puller.Pull(ctx, from, prog, checks...)
	if err != nil {
		a.log.Warn("pull failed", "image", ref, "error", err)
		return nil, fmt.Errorf("pull: %w", err)
	}
	spans.Add(ctx, fmt.Sprintf("image resolved and verified (%d of %d layers from the verified cache, %d from verified disks)", img.CachedLayers, len(img.DiffIDs), img.DiskLayers), time.Since(start))
	a.mu.Lock()
	a.images[ref] = img
	a.mu.Unlock()
	a.log.Info("image pulled", "image", ref, "digest", img.ManifestDigest, "signer", img.Signer, "layers", len(img.DiffIDs), "cached", img.CachedLayers, "disks", img.DiskLayers, "took", time.Since(start))
	return &agentv1.PullImageResponse{
		Image: ref, ManifestDigest: img.ManifestDigest, ConfigDigest: img.ConfigDigest,
		DiffIds: img.DiffIDs, CachedLayers: int32(img.CachedLayers),
	}, nil
}

func (s *service) PullProgress(_ context.Context, req *agentv1.PullProgressRequest) (*agentv1.PullProgressResponse, error) {
	s.a.mu.Lock()
	prog := s.a.pulls[req.GetImage()]
	s.a.mu.Unlock()
	if prog == nil {
		return nil, fmt.Errorf("no pull of %q: %w", req.GetImage(), errNotFound)
	}
	p := prog.Snapshot()
	resp := &agentv1.PullProgressResponse{
		LayersTotal: int32(p.LayersTotal), LayersDone: int32(p.LayersDone),
		BytesTotal: p.BytesTotal, BytesDone: p.BytesDone, Done: p.Done,
	}
	if p.Err != nil {
		resp.Error = p.Err.Error()
	}
	return resp, nil
}

func (s *service) CreateContainer(ctx context.Context, req *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	a := s.a
	spec := req.GetSpec()
	if spec == nil {
		return nil, fmt.Errorf("missing container spec: %w", errInvalid)
	}
	name := spec.GetName()
	if err := checkName("container", name); err != nil {
		return nil, err
	}
	if spec.GetPrivileged() {
		// Whatever the policy says (an allow-all one allows it): a
		// privileged container would have the sandbox's devices and
		// every capability.
		return nil, fmt.Errorf("container %q: privileged containers never run in a cocoon sandbox: %w", name, errInvalid)
	}
	// Before the lock: the key broker is a network round trip away.
	spec, err := a.unsealEnv(ctx, spec)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandbox == nil {
		return nil, fmt.Errorf("create the sandbox first: %w", errState)
	}
	if _, ok := a.containers[name]; ok {
		return nil, fmt.Errorf("container %q already exists; remove it first: %w", name, errExists)
	}
	img, ok := a.images[spec.GetImage()]
	if !ok {
		return nil, fmt.Errorf("container %q: image %q was not pulled in this sandbox; pull it first: %w", name, spec.GetImage(), errNotFound)
	}
	bundle := filepath.Join(a.cfg.StateDir, "containers", name)
	end := spans.Start(ctx, "rootfs mounted (overlay of the verified layers)")
	if err := mountRootfs(bundle, img.LayerDirs); err != nil {
		os.RemoveAll(bundle)
		return nil, fmt.Errorf("container %q: %w", name, err)
	}
	end()
	ok = false
	defer func() {
		if !ok {
			unmountRootfs(bundle)
			os.RemoveAll(bundle)
		}
	}()
	files := a.sandbox.files
	if rc, err := resolvConf(spec.GetDns()); err != nil {
		return nil, fmt.Errorf("container %q: %w", name, err)
	} else if rc != "" {
		files.resolv = filepath.Join(bundle, "resolv.conf")
		if err := os.WriteFile(files.resolv, []byte(rc), 0o644); err != nil {
			return nil, fmt.Errorf("container %q: write resolv.conf: %w", name, err)
		}
	}
	var pidNS string
	if spec.GetSharePidNamespace() {
		ns, err := a.sharedPIDNamespace()
		if err != nil {
			return nil, err
		}
		pidNS = ns
	}
	end = spans.Start(ctx, "OCI runtime spec built and written")
	sp, err := buildSpec(specInput{
		c: spec, img: img, rootfs: filepath.Join(bundle, "rootfs"), hostname: a.sandbox.hostname, pidNS: pidNS,
		// The container's cgroup is a leaf below one of its own, which
		// outlives runc's cleanup so its memory.events tells an OOM kill.
		cgroup:  filepath.Join(a.cfg.CgroupParent, name, "c"),
		volumes: a.sandbox.volumes, files: files, apiSocket: a.cfg.PodAPISocket,
	})
	if err != nil {
		return nil, err
	}
	memV1 := moveMemoryLimitV1(sp)
	if err := writeJSON(filepath.Join(bundle, "config.json"), sp); err != nil {
		return nil, fmt.Errorf("container %q: write runtime spec: %w", name, err)
	}
	end()
	if _, exists := a.logs[name]; !exists {
		lf, err := newLogFile(filepath.Join(a.cfg.StateDir, "logs", name+".log"))
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", name, err)
		}
		a.logs[name] = lf
	}
	a.containers[name] = &container{spec: spec, img: img, bundle: bundle, process: sp.Process, state: stateCreated, memLimitV1: memV1}
	ok = true
	a.log.Info("container created", "container", name, "image", spec.GetImage())
	return &agentv1.CreateContainerResponse{}, nil
}

// get returns the container name, or a not-found error.
func (a *Agent) get(name string) (*container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.containers[name]
	if !ok {
		return nil, fmt.Errorf("no container %q in this sandbox: %w", name, errNotFound)
	}
	return c, nil
}

func (c *container) status() (state string, done chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.done
}

func (s *service) StartContainer(ctx context.Context, req *agentv1.StartContainerRequest) (*agentv1.StartContainerResponse, error) {
	a := s.a
	c, err := a.get(req.GetContainer())
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	lf := a.logs[req.GetContainer()]
	c.mu.Lock()
	st := c.state
	if st == stateCreated {
		c.state = "starting"
	}
	c.mu.Unlock()
	a.mu.Unlock()
	if st != stateCreated {
		return nil, fmt.Errorf("container %q is %s; only a created container can start: %w", req.GetContainer(), st, errState)
	}
	end := spans.Start(ctx, "runc run, until the container's process exists")
	if err := a.start(c, lf); err != nil {
		return nil, fmt.Errorf("start %q: %w", req.GetContainer(), err)
	}
	end()
	return &agentv1.StartContainerResponse{}, nil
}

func (s *service) RemoveContainer(ctx context.Context, req *agentv1.RemoveContainerRequest) (*agentv1.RemoveContainerResponse, error) {
	a := s.a
	c, err := a.get(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if id := req.GetExecId(); id != "" {
		if err := c.removeExec(id); err != nil {
			return nil, err
		}
		return &agentv1.RemoveContainerResponse{}, nil
	}
	if st, _ := c.status(); st != stateCreated && st != stateExited {
		return nil, fmt.Errorf("container %q is %s; stop it before removing: %w", req.GetContainer(), st, errState)
	}
	a.remove(ctx, c)
	return &agentv1.RemoveContainerResponse{}, nil
}

func (a *Agent) remove(ctx context.Context, c *container) {
	_ = a.runc.Delete(ctx, c.spec.GetName(), &runcDeleteForce)
	unmountRootfs(c.bundle)
	c.dropExecs()
	_ = os.RemoveAll(c.bundle)
	a.mu.Lock()
	if a.containers[c.spec.GetName()] == c {
		delete(a.containers, c.spec.GetName())
	}
	a.mu.Unlock()
}

func (s *service) ExecProcess(ctx context.Context, req *agentv1.ExecProcessRequest) (*agentv1.ExecProcessResponse, error) {
	c, err := s.a.get(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if st, _ := c.status(); st != stateRunning {
		return nil, fmt.Errorf("container %q is %s; exec needs a running container: %w", req.GetContainer(), st, errState)
	}
	if len(req.GetArgs()) == 0 {
		return nil, fmt.Errorf("exec needs a command: %w", errInvalid)
	}
	if t := req.GetTimeoutSeconds(); t < 0 || t > maxExecTimeout {
		return nil, fmt.Errorf("exec timeout %d s: give 1 to %d (0 for the default, 60 s): %w", t, maxExecTimeout, errInvalid)
	}
	if req.GetDetach() {
		return s.a.execDetached(c, req)
	}
	return s.a.exec(ctx, c, req)
}

func (s *service) SignalContainer(ctx context.Context, req *agentv1.SignalContainerRequest) (*agentv1.SignalContainerResponse, error) {
	c, err := s.a.get(req.GetContainer())
	if err != nil {
		return nil, err
	}
	sig := req.GetSignal()
	if sig <= 0 || sig > 64 {
		return nil, fmt.Errorf("signal %d is not a valid signal number: %w", sig, errInvalid)
	}
	if id := req.GetExecId(); id != "" {
		if req.GetAll() {
			return nil, fmt.Errorf("signal exec %q: all applies to a container's processes, not to an exec: %w", id, errInvalid)
		}
		if err := c.signalExec(id, int(sig)); err != nil {
			return nil, err
		}
		return &agentv1.SignalContainerResponse{}, nil
	}
	if st, _ := c.status(); st != stateRunning {
		return nil, fmt.Errorf("container %q is %s; only a running container can be signalled: %w", req.GetContainer(), st, errState)
	}
	if err := s.a.runc.Kill(ctx, req.GetContainer(), int(sig), &runcKillOpts{All: req.GetAll()}); err != nil {
		return nil, fmt.Errorf("signal %s to %q: %w", unix.SignalName(syscall.Signal(sig)), req.GetContainer(), err)
	}
	return &agentv1.SignalContainerResponse{}, nil
}

const maxWait = 30 * time.Second

// maxExecTimeout bounds how long a host may hold an exec (seconds).
const maxExecTimeout = 3600

func clampWait(ms int32) time.Duration {
	d := time.Duration(ms) * time.Millisecond
	if d < 0 {
		return 0
	}
	if d > maxWait {
		return maxWait
	}
	return d
}

func (s *service) WaitContainer(ctx context.Context, req *agentv1.WaitContainerRequest) (*agentv1.WaitContainerResponse, error) {
	c, err := s.a.get(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if id := req.GetExecId(); id != "" {
		return waitExec(ctx, c, id, clampWait(req.GetTimeoutMs()))
	}
	st, done := c.status()
	if st == stateCreated || done == nil {
		return nil, fmt.Errorf("container %q has not started: %w", req.GetContainer(), errState)
	}
	t := time.NewTimer(clampWait(req.GetTimeoutMs()))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return &agentv1.WaitContainerResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return &agentv1.WaitContainerResponse{Exited: true, ExitCode: int32(c.exitCode), Reason: c.reason}, nil
}

func (s *service) ReadLogs(ctx context.Context, req *agentv1.ReadLogsRequest) (*agentv1.ReadLogsResponse, error) {
	s.a.mu.Lock()
	lf := s.a.logs[req.GetContainer()]
	s.a.mu.Unlock()
	if id := req.GetExecId(); id != "" {
		c, err := s.a.get(req.GetContainer())
		if err != nil {
			return nil, err
		}
		e, err := c.execOf(id)
		if err != nil {
			return nil, err
		}
		lf = e.log
	}
	if lf == nil {
		return nil, fmt.Errorf("no logs for container %q: %w", req.GetContainer(), errNotFound)
	}
	max := int(req.GetMaxBytes())
	if max <= 0 || max > 1<<20 {
		max = 1 << 20
	}
	chunks, next, eof, err := lf.read(ctx, req.GetOffset(), max, clampWait(req.GetWaitMs()))
	if err != nil {
		return nil, err
	}
	resp := &agentv1.ReadLogsResponse{NextOffset: next, Eof: eof}
	for _, c := range chunks {
		if req.GetStreams() {
			resp.Chunks = append(resp.Chunks, &agentv1.LogChunk{Stream: c.stream, Data: c.data})
		} else {
			resp.Data = append(resp.Data, c.data...)
		}
	}
	return resp, nil
}

func (s *service) ListContainers(_ context.Context, _ *agentv1.ListContainersRequest) (*agentv1.ListContainersResponse, error) {
	a := s.a
	a.mu.Lock()
	cs := make([]*container, 0, len(a.containers))
	for _, c := range a.containers {
		cs = append(cs, c)
	}
	a.mu.Unlock()
	resp := &agentv1.ListContainersResponse{}
	for _, c := range cs {
		c.mu.Lock()
		st := &agentv1.ContainerStatus{
			Name: c.spec.GetName(), Image: c.spec.GetImage(), ManifestDigest: c.img.ManifestDigest,
			State: c.state, ExitCode: int32(c.exitCode), Pid: int32(c.pid), Reason: c.reason,
		}
		if !c.started.IsZero() {
			st.StartedAtUnixNano = c.started.UnixNano()
		}
		if !c.finished.IsZero() {
			st.FinishedAtUnixNano = c.finished.UnixNano()
		}
		c.mu.Unlock()
		resp.Containers = append(resp.Containers, st)
	}
	sortStatuses(resp.Containers)
	return resp, nil
}

func (s *service) Stats(ctx context.Context, req *agentv1.StatsRequest) (*agentv1.StatsResponse, error) {
	c, err := s.a.get(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if st, _ := c.status(); st != stateRunning {
		return nil, fmt.Errorf("container %q is %s; stats need a running container: %w", req.GetContainer(), st, errState)
	}
	st, err := s.a.stats(ctx, req.GetContainer())
	if err != nil {
		return nil, fmt.Errorf("stats of %q: %w", req.GetContainer(), err)
	}
	resp := &agentv1.StatsResponse{}
	if st.Cpu.Usage.Total > 0 {
		resp.CpuUsageNs = st.Cpu.Usage.Total
	}
	resp.MemoryBytes = st.Memory.Usage.Usage
	resp.Pids = st.Pids.Current
	return resp, nil
}

func (s *service) Shutdown(_ context.Context, _ *agentv1.ShutdownRequest) (*agentv1.ShutdownResponse, error) {
	s.a.Close()
	return &agentv1.ShutdownResponse{}, nil
}

// stats runs `runc events --stats` and reads its whole output before
// waiting for it (go-runc's Stats waits concurrently with its read, and
// loses the output when runc exits first).
func (a *Agent) stats(ctx context.Context, id string) (*runc.Stats, error) {
	bin := a.runc.Command
	if bin == "" {
		bin = "runc"
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--root", a.runc.Root, "events", "--stats", id)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("runc events --stats: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var e runc.Event
	if err := json.Unmarshal(out, &e); err != nil || e.Stats == nil {
		return nil, fmt.Errorf("runc events --stats: unexpected output %q", bytes.TrimSpace(out))
	}
	return e.Stats, nil
}

func waitExec(ctx context.Context, c *container, id string, wait time.Duration) (*agentv1.WaitContainerResponse, error) {
	e, err := c.execOf(id)
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-e.done:
	case <-t.C:
		return &agentv1.WaitContainerResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	code, _ := e.exitCode()
	return &agentv1.WaitContainerResponse{Exited: true, ExitCode: int32(code)}, nil
}

func (s *service) WriteStdin(_ context.Context, req *agentv1.WriteStdinRequest) (*agentv1.WriteStdinResponse, error) {
	pio, what, err := s.a.procIO(req.GetContainer(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := pio.write(what, req.GetData(), req.GetClose()); err != nil {
		return nil, err
	}
	return &agentv1.WriteStdinResponse{}, nil
}

func (s *service) ResizeTerminal(_ context.Context, req *agentv1.ResizeTerminalRequest) (*agentv1.ResizeTerminalResponse, error) {
	pio, what, err := s.a.procIO(req.GetContainer(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	if err := pio.resize(what, req.GetWidth(), req.GetHeight()); err != nil {
		return nil, err
	}
	return &agentv1.ResizeTerminalResponse{}, nil
}
