package shimv2

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/sandbox"
)

var empty = &emptypb.Empty{}

// Service is the containerd task service (task API v3) of one pod: the
// sandbox task launches the cocoon sandbox, every other task is a container
// created, started, signalled and removed through the agent API.
type Service struct {
	ctx context.Context
	sd  shutdown.Service
	log *slog.Logger

	events chan any

	mu         sync.Mutex
	opts       *Options
	inst       *sandbox.Instance
	pol        *policy.Policy
	sandboxID  string
	containers map[string]*container
	pulls      map[string]*pull
}

type pull struct {
	done chan struct{}
	err  error
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

// NewService makes the task service; events go to publisher until sd shuts
// the shim down.
func NewService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service, log *slog.Logger) *Service {
	s := &Service{ctx: ctx, sd: sd, log: log, events: make(chan any, 128),
		containers: map[string]*container{}, pulls: map[string]*pull{}}
	sd.RegisterCallback(func(context.Context) error {
		if inst := s.takeInstance(); inst != nil {
			inst.Shutdown()
		}
		return nil
	})
	go s.forward(publisher)
	return s
}

// RegisterTTRPC serves the task API.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *Service) forward(p shim.Publisher) {
	ctx := context.WithoutCancel(s.ctx)
	defer p.Close()
	publish := func(e any) {
		if err := p.Publish(ctx, runtime.GetTopic(e), e); err != nil {
			s.log.Error("publish event", "error", err)
		}
	}
	for {
		select {
		case e := <-s.events:
			publish(e)
		case <-s.sd.Done():
			for {
				select {
				case e := <-s.events:
					publish(e)
				default:
					return
				}
			}
		}
	}
}

func (s *Service) send(e any) {
	select {
	case s.events <- e:
	case <-s.sd.Done():
	}
}

func (s *Service) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "container %s", id)
	}
	return c, nil
}

func (s *Service) getProcess(id, execID string) (*container, *process, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.init, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "exec %s of container %s", execID, id)
	}
	return c, p, nil
}

// agentErr turns an agent API error into one for containerd: the agent's
// explanation (a policy denial says what was asked and what the policy
// allows) with its code, so that crictl and `kubectl describe` show it.
func agentErr(what string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return status.Errorf(st.Code(), "%s: %s", what, st.Message())
	}
	return status.Errorf(codes.Unknown, "%s: %s", what, sandbox.Message(err))
}

// Create creates the pod sandbox or a container.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	spec, err := readSpec(r.GetBundle())
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	if r.GetCheckpoint() != "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint/restore is not supported by the cocoon runtime: a sandbox's memory stays in the TEE")
	}
	switch spec.Annotations[annContainerType] {
	case typeSandbox:
		return s.createSandbox(ctx, r, spec)
	case typeContainer:
		return s.createContainer(ctx, r, spec)
	}
	return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, errNotCRI))
}

func (s *Service) createSandbox(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*taskAPI.CreateTaskResponse, error) {
	opts, err := ParseOptions(r.GetOptions())
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	if err := checkNamespaces(spec, true); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	ann := spec.Annotations[sandbox.PolicyAnnotation]
	if ann == "" && opts.DefaultPolicy != "" {
		text, err := readPolicyFile(opts.DefaultPolicy)
		if err != nil {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		ann = base64.StdEncoding.EncodeToString(text)
		s.log.Warn("the pod has no policy annotation: it runs under the runtime's default policy", "pod", spec.Annotations[annSandboxName], "default_policy", opts.DefaultPolicy)
	}
	p, pol, err := podFromPolicy(ann)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if pol.AllowAll {
		// The host decides everything under an allow-all policy: the
		// sandbox takes the CRI's names.
		p.Name = dnsLabel(spec.Annotations[annSandboxName])
		p.Hostname = spec.Hostname
	}
	if p.Hostname == "" {
		// A workload's replica: its hostname is the pod's, as the
		// controller named it (the policy admits any).
		p.Hostname = spec.Hostname
	}
	if v, ok := spec.Annotations[sandbox.AnnotationLayerDisks]; ok {
		// The pod's choice of image path (VM sandboxes): layer disks or
		// guest pull. Either way the guest checks the layers against the
		// policy; the choice is what the host sees and how fast.
		p.Annotations[sandbox.AnnotationLayerDisks] = v
	}
	if spec.Linux != nil && len(spec.Linux.Sysctl) > 0 {
		// The pod's sysctls and the runtime's defaults, for the sandbox's
		// namespaces (no pause container sets them): the policy judges.
		p.Sysctls = spec.Linux.Sysctl
	}
	s.mu.Lock()
	if s.sandboxID != "" {
		s.mu.Unlock()
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "this shim already runs sandbox %s", s.sandboxID)
	}
	s.sandboxID, s.opts, s.pol = r.GetID(), opts, pol
	s.mu.Unlock()
	fail := func(err error) (*taskAPI.CreateTaskResponse, error) {
		s.mu.Lock()
		s.sandboxID = ""
		s.mu.Unlock()
		return nil, err
	}
	sum := sha256.Sum256([]byte(r.GetID()))
	lo := sandbox.LaunchOptions{
		Options: opts.sandboxOptions(),
		Dir:     filepath.Join(opts.Root, "cri", hex.EncodeToString(sum[:8])),
		Pod:     p, NetNS: netNS(spec), Log: s.log.With("sandbox", r.GetID()),
	}
	if err := os.WriteFile(filepath.Join(r.GetBundle(), fileSandboxDir), []byte(lo.Dir+"\n"), 0o600); err != nil {
		return fail(errgrpc.ToGRPC(err))
	}
	inst, err := sandbox.Launch(ctx, lo)
	if err != nil {
		return fail(status.Errorf(codes.FailedPrecondition, "launch the cocoon sandbox of pod %q: %s", spec.Annotations[annSandboxName], err))
	}
	c := &container{init: newProcess(r.GetID(), "", r.GetStdin(), r.GetStdout(), r.GetStderr(), r.GetTerminal()),
		bundle: r.GetBundle(), sandbox: true, name: p.Name, execs: map[string]*process{}}
	pid := uint32(inst.PID())
	c.init.pid = pid
	s.mu.Lock()
	s.inst = inst
	s.containers[r.GetID()] = c
	s.mu.Unlock()
	go s.watchSandbox(inst)
	s.send(&eventstypes.TaskCreate{ContainerID: r.GetID(), Bundle: r.GetBundle(), Pid: pid})
	return &taskAPI.CreateTaskResponse{Pid: pid}, nil
}

// watchSandbox ends every task when the agent (or VM) is gone.
func (s *Service) watchSandbox(inst *sandbox.Instance) {
	<-inst.Gone()
	s.mu.Lock()
	cs := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	now := time.Now()
	for _, c := range cs {
		for _, e := range s.execsOf(c) {
			s.exit(c, e, 137, now)
		}
		if !c.sandbox {
			s.exit(c, c.init, 137, now)
		}
	}
	for _, c := range cs {
		if c.sandbox {
			s.exit(c, c.init, 137, now)
		}
	}
}

func (s *Service) execsOf(c *container) []*process {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*process, 0, len(c.execs))
	for _, e := range c.execs {
		out = append(out, e)
	}
	return out
}

// exit records a process's exit and publishes it, once.
func (s *Service) exit(c *container, p *process, code uint32, at time.Time) {
	if !p.setExited(code, at) {
		return
	}
	_, pid, _, _ := p.state()
	id := p.execID
	if id == "" {
		id = c.init.id
	}
	s.send(&eventstypes.TaskExit{ContainerID: c.init.id, ID: id, Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)})
}

func (s *Service) instance() (*sandbox.Instance, *policy.Policy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inst == nil {
		return nil, nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "the pod's sandbox is not running")
	}
	return s.inst, s.pol, nil
}

func (s *Service) createContainer(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*taskAPI.CreateTaskResponse, error) {
	inst, pol, err := s.instance()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sbID := s.sandboxID
	s.mu.Unlock()
	if got := spec.Annotations[annSandboxID]; got != sbID {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "container %s belongs to sandbox %q; this shim runs %q", r.GetID(), got, sbID)
	}
	if err := checkNamespaces(spec, false); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	cs, err := containerSpec(spec, pol.Containers[spec.Annotations[annContainerName]])
	if err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	// The container's stdin (stdin: true; kubectl attach) is the fifo
	// containerd gives; the policy pins whether it has one.
	cs.Stdin = r.GetStdin() != ""
	if pol.AllowAll {
		// The CRI's names need not be DNS labels, and one name may have
		// several containers (attempts): under an allow-all policy each
		// container is named for its ID.
		cs.Name = dnsLabel("c-" + r.GetID())
	}
	if err := s.pullImage(ctx, inst, cs.GetImage()); err != nil {
		return nil, err
	}
	if _, err := inst.Client().CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: cs}); err != nil {
		return nil, agentErr("create container "+cs.GetName(), err)
	}
	c := &container{init: newProcess(r.GetID(), "", r.GetStdin(), r.GetStdout(), r.GetStderr(), cs.GetTty()),
		bundle: r.GetBundle(), name: cs.GetName(), execs: map[string]*process{}, logsDone: make(chan struct{})}
	s.mu.Lock()
	s.containers[r.GetID()] = c
	s.mu.Unlock()
	s.send(&eventstypes.TaskCreate{ContainerID: r.GetID(), Bundle: r.GetBundle(),
		IO: &eventstypes.TaskIO{Stdin: r.GetStdin(), Stdout: r.GetStdout(), Stderr: r.GetStderr()}})
	return &taskAPI.CreateTaskResponse{}, nil
}

// pullImage has the agent pull and verify an image once per sandbox. The
// image the host's containerd pulled is bookkeeping: no container ever runs
// from the host's snapshot.
func (s *Service) pullImage(ctx context.Context, inst *sandbox.Instance, ref string) error {
	s.mu.Lock()
	p, ok := s.pulls[ref]
	if !ok {
		p = &pull{done: make(chan struct{})}
		s.pulls[ref] = p
	}
	s.mu.Unlock()
	if !ok {
		s.mu.Lock()
		regs := s.opts.RegistryConfigPath
		s.mu.Unlock()
		mirror, err := mirrorFor(regs, ref)
		if err == nil {
			_, err = inst.Client().PullImage(context.WithoutCancel(ctx), &agentv1.PullImageRequest{Image: ref, Mirror: mirror})
		}
		if err != nil {
			p.err = agentErr("pull image "+ref+" in the sandbox", err)
			s.mu.Lock()
			delete(s.pulls, ref) // a later create may retry
			s.mu.Unlock()
		}
		close(p.done)
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start starts a container (or an exec); the sandbox is running already.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	if c.sandbox && r.GetExecID() == "" {
		p.setRunning(p.pid)
		s.send(&eventstypes.TaskStart{ContainerID: r.GetID(), Pid: p.pid})
		return &taskAPI.StartResponse{Pid: p.pid}, nil
	}
	if c.sandbox {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "exec in the pod sandbox is not supported: it has no process")
	}
	inst, _, err := s.instance()
	if err != nil {
		return nil, err
	}
	if r.GetExecID() != "" {
		return s.startExec(ctx, inst, c, p)
	}
	resp, err := inst.Client().StartContainer(ctx, &agentv1.StartContainerRequest{Container: c.name})
	if err != nil {
		return nil, agentErr("start container "+c.name, err)
	}
	pid := uint32(resp.GetPid())
	p.setRunning(pid)
	go s.copyOutput(inst, &output{container: c.name, stdout: p.stdout, stderr: p.stderr, done: c.logsDone}, p.exited)
	if p.stdin != "" {
		go s.copyStdin(inst, c.name, p)
	}
	go s.watchContainer(inst, c)
	s.send(&eventstypes.TaskStart{ContainerID: r.GetID(), Pid: pid})
	return &taskAPI.StartResponse{Pid: pid}, nil
}

// watchContainer waits for a container's exit in the agent, then for its
// output to be copied, and publishes the exit.
func (s *Service) watchContainer(inst *sandbox.Instance, c *container) {
	ctx := context.WithoutCancel(s.ctx)
	for {
		select {
		case <-c.init.exited:
			return
		case <-inst.Gone():
			return // watchSandbox reports it
		default:
		}
		resp, err := inst.Client().WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: c.name, TimeoutMs: 30000})
		if err != nil {
			select {
			case <-inst.Gone():
				return
			case <-time.After(100 * time.Millisecond):
			}
			s.log.Warn("wait for container", "container", c.name, "error", sandbox.Message(err))
			continue
		}
		if !resp.GetExited() {
			continue
		}
		select {
		case <-c.logsDone:
		case <-time.After(5 * time.Second):
		}
		// The exit is recorded here and the output is in the CRI's log:
		// the agent's copy goes, so that kubelet can start the next
		// attempt of the container (a policy container exists once at a
		// time) and the guest's memory is freed.
		if _, err := inst.Client().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: c.name}); err != nil {
			s.log.Warn("remove exited container", "container", c.name, "error", sandbox.Message(err))
		}
		if resp.GetReason() == "OOMKilled" {
			// The CRI reports the reason from this event.
			s.send(&eventstypes.TaskOOM{ContainerID: c.init.id})
		}
		s.exit(c, c.init, uint32(resp.GetExitCode()), time.Now())
		return
	}
}

// Delete removes a container from the sandbox, or the sandbox itself.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	st, pid, code, at := p.state()
	if r.GetExecID() != "" {
		if st == task.Status_RUNNING {
			return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s is running", r.GetExecID())
		}
		s.mu.Lock()
		delete(c.execs, r.GetExecID())
		s.mu.Unlock()
		return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
	}
	if c.sandbox {
		if inst := s.takeInstance(); inst != nil {
			inst.Shutdown()
		}
		s.exit(c, p, 137, time.Now())
		_, pid, code, at = p.state()
	} else if inst, _, err := s.instance(); err == nil {
		if st == task.Status_RUNNING {
			return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is running: stop it first", c.name)
		}
		if st == task.Status_CREATED {
			// A stopped container was removed from the agent when it
			// exited.
			if _, err := inst.Client().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: c.name}); err != nil {
				s.log.Warn("remove container", "container", c.name, "error", sandbox.Message(err))
			}
			s.exit(c, p, 0, time.Now())
			_, pid, code, at = p.state()
		}
	}
	s.mu.Lock()
	delete(s.containers, r.GetID())
	s.mu.Unlock()
	s.send(&eventstypes.TaskDelete{ContainerID: r.GetID(), Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)})
	return &taskAPI.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Kill signals a container's processes through the agent (as the policy
// allows); killing the sandbox task stops the whole sandbox.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	c, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	if st, _, _, _ := p.state(); st == task.Status_STOPPED {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "process already finished")
	}
	if r.GetExecID() != "" {
		return s.killExec(ctx, c, p, r.GetSignal())
	}
	if c.sandbox {
		if inst := s.takeInstance(); inst != nil {
			go inst.Shutdown() // watchSandbox publishes the exits
		}
		return empty, nil
	}
	inst, _, err := s.instance()
	if err != nil {
		return nil, err
	}
	if st, _, _, _ := p.state(); st == task.Status_CREATED {
		// Never started: it goes from the agent, and is stopped.
		if _, err := inst.Client().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: c.name}); err != nil {
			s.log.Warn("remove container", "container", c.name, "error", sandbox.Message(err))
		}
		s.exit(c, p, 128+r.GetSignal(), time.Now())
		return empty, nil
	}
	if _, err := inst.Client().SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: c.name, Signal: int32(r.GetSignal()), All: r.GetAll()}); err != nil {
		// The container may have exited (and left the agent) since the
		// exit was last seen: then the process is finished, as containerd
		// expects to be told.
		// (The agent marks an exit once its output has drained: wait a
		// little for it.)
		if w, werr := inst.Client().WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: c.name, TimeoutMs: 3000}); (werr == nil && w.GetExited()) || status.Code(werr) == codes.NotFound {
			return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "process already finished")
		}
		return nil, agentErr(fmt.Sprintf("signal %d to container %s", r.GetSignal(), c.name), err)
	}
	return empty, nil
}

// State reports a process's state.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	st, pid, code, at := p.state()
	return &taskAPI.StateResponse{ID: r.GetID(), ExecID: r.GetExecID(), Bundle: c.bundle, Pid: pid, Status: st,
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal,
		ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Wait waits for a process to exit.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	if err := p.wait(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	_, _, code, at := p.state()
	return &taskAPI.WaitResponse{ExitStatus: code, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Pids lists a container's process (its init, as the agent reports it).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	_, p, err := s.getProcess(r.GetID(), "")
	if err != nil {
		return nil, err
	}
	_, pid, _, _ := p.state()
	return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: pid}}}, nil
}

// Connect reports the shim's and the task's process IDs.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if _, p, err := s.getProcess(r.GetID(), ""); err == nil {
		_, pid, _, _ = p.state()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid}, nil
}

// Shutdown ends the shim once it has no task left.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 {
		return empty, nil
	}
	s.sd.Shutdown()
	return empty, nil
}

// Pause is not supported.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "pause is not supported by the cocoon runtime")
}

// Resume is not supported.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "resume is not supported by the cocoon runtime")
}

// Checkpoint is refused: a sandbox's memory stays in the TEE.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "checkpoint is not supported by the cocoon runtime: a sandbox's memory stays in the TEE")
}

// Update is refused: a container's resources are pinned by the policy.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	if c, err := s.get(r.GetID()); err == nil && c.sandbox {
		return empty, nil // the CRI resizes the pod's cgroup; the sandbox's limits are the policy's
	}
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "updating resources is not supported by the cocoon runtime: the policy pins each container's resources")
}

// takeInstance returns the running sandbox, if any, and forgets it: the
// caller shuts it down, once.
func (s *Service) takeInstance() *sandbox.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.inst
	s.inst = nil
	return inst
}
