package shimv2

import (
	"context"
	"fmt"

	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/sandbox"
)

// execDenied is an exec's exit status when the agent refused it; the
// explanation goes to its stderr.
const execDenied = 126

// Exec adds an exec process to a container. Only its command line reaches
// the agent: an exec runs with the container's environment, user and
// working directory, which the policy pinned at create.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	c, err := s.get(r.GetID())
	if err != nil {
		return nil, err
	}
	v, err := typeurl.UnmarshalAny(r.GetSpec())
	if err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec spec: %v", err)
	}
	ps, ok := v.(*specs.Process)
	if !ok || len(ps.Args) == 0 {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec spec has no command")
	}
	p := newProcess(r.GetID(), r.GetExecID(), r.GetStdin(), r.GetStdout(), r.GetStderr(), r.GetTerminal())
	p.spec = ps
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := c.execs[r.GetExecID()]; ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s", r.GetExecID())
	}
	c.execs[r.GetExecID()] = p
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.GetID(), ExecID: r.GetExecID()})
	return empty, nil
}

// startExec starts the exec through the agent, detached: the policy
// decides whether the command may run (and whether it may read stdin); its
// output, stdin, terminal size and exit then travel request by request. A
// refusal ends the exec with status 126 and the agent's explanation on its
// stderr, as a shell reports a command it cannot run.
func (s *Service) startExec(ctx context.Context, inst *sandbox.Instance, c *container, p *process) (*taskAPI.StartResponse, error) {
	if st, _, _, _ := c.init.state(); st != task.Status_RUNNING {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is not running", c.name)
	}
	started := false
	p.startOnce.Do(func() { started = true })
	if !started {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s was started already", p.execID)
	}
	resp, err := inst.Client().ExecProcess(ctx, &agentv1.ExecProcessRequest{
		Container: c.name, Args: p.spec.Args, Detach: true, Terminal: p.terminal, OpenStdin: p.stdin != "",
	})
	p.setRunning(0)
	s.send(&eventstypes.TaskExecStarted{ContainerID: c.init.id, ExecID: p.execID})
	if err != nil {
		msg := sandbox.Message(err)
		if st, ok := status.FromError(err); ok {
			msg = st.Code().String() + ": " + st.Message()
		}
		go s.refuseExec(c, p, "cocoon: exec refused: "+msg+"\n")
		return &taskAPI.StartResponse{}, nil
	}
	p.mu.Lock()
	p.agentExec = resp.GetExecId()
	p.mu.Unlock()
	out := &output{container: c.name, execID: resp.GetExecId(), stdout: p.stdout, stderr: p.stderr, done: make(chan struct{})}
	go s.copyOutput(inst, out, p.exited)
	if p.stdin != "" {
		go s.copyStdin(inst, c.name, p)
	}
	go s.watchExec(inst, c, p, out.done)
	return &taskAPI.StartResponse{}, nil
}

// refuseExec ends an exec the agent refused: the explanation on its stderr
// (its stdout when it has a terminal), status 126.
func (s *Service) refuseExec(c *container, p *process, msg string) {
	ctx := context.WithoutCancel(s.ctx)
	path := p.stderr
	if p.terminal || path == "" {
		path = p.stdout
	}
	if p.stdin != "" {
		// Nothing reads the exec's stdin: open it so that the writer is
		// not left blocked, and close it.
		if f, err := fifo.OpenFifo(ctx, p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	}
	for _, o := range []string{p.stdout, p.stderr} {
		if o == "" {
			continue
		}
		if w := openOutput(ctx, o); w != nil {
			if o == path {
				_, _ = w.Write([]byte(msg))
			}
			w.Close()
		}
		if o == path {
			path = "" // stdout and stderr may be one fifo
		}
	}
	s.exit(c, p, execDenied, time.Now())
}

// watchExec waits for an exec's exit in the agent, then for its output to
// be copied, publishes the exit and has the agent forget the exec.
func (s *Service) watchExec(inst *sandbox.Instance, c *container, p *process, copied <-chan struct{}) {
	ctx := context.WithoutCancel(s.ctx)
	id := p.agentExecID()
	for {
		select {
		case <-p.exited:
			return
		case <-inst.Gone():
			s.exit(c, p, 137, time.Now())
			return
		default:
		}
		resp, err := inst.Client().WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: c.name, ExecId: id, TimeoutMs: 30000})
		if err != nil {
			if status.Code(err) == codes.NotFound {
				// The container (and its execs) left the agent.
				s.exit(c, p, 137, time.Now())
				return
			}
			select {
			case <-inst.Gone():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if !resp.GetExited() {
			continue
		}
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
		}
		if _, err := inst.Client().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: c.name, ExecId: id}); err != nil && status.Code(err) != codes.NotFound {
			s.log.Warn("remove exited exec", "container", c.name, "exec", id, "error", sandbox.Message(err))
		}
		s.exit(c, p, uint32(resp.GetExitCode()), time.Now())
		return
	}
}

// copyStdin copies what containerd writes to a process's stdin fifo to the
// agent, and closes the process's stdin at the fifo's end.
func (s *Service) copyStdin(inst *sandbox.Instance, name string, p *process) {
	ctx := context.WithoutCancel(s.ctx)
	f, err := fifo.OpenFifo(ctx, p.stdin, syscall.O_RDONLY, 0)
	if err != nil {
		s.log.Warn("open stdin", "container", name, "error", err)
		return
	}
	defer f.Close()
	id := p.agentExecID()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if _, err := inst.Client().WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: name, ExecId: id, Data: buf[:n]}); err != nil {
				s.log.Info("stdin no longer accepted", "container", name, "error", sandbox.Message(err))
				return
			}
		}
		if rerr != nil {
			break
		}
	}
	s.closeStdin(ctx, inst, name, p)
}

// closeStdin ends a process's input once.
func (s *Service) closeStdin(ctx context.Context, inst *sandbox.Instance, name string, p *process) {
	if p.execID != "" && p.agentExecID() == "" {
		return // an exec the agent has not started (or refused)
	}
	p.closeStdinOnce.Do(func() {
		if _, err := inst.Client().WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: name, ExecId: p.agentExecID(), Close: true}); err != nil {
			s.log.Info("close stdin", "container", name, "error", sandbox.Message(err))
		}
	})
}

// ResizePty sets the window size of a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	c, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	if !p.terminal {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "process has no terminal")
	}
	inst, _, err := s.instance()
	if err != nil {
		return nil, err
	}
	if _, err := inst.Client().ResizeTerminal(ctx, &agentv1.ResizeTerminalRequest{Container: c.name, ExecId: p.agentExecID(), Width: r.GetWidth(), Height: r.GetHeight()}); err != nil {
		return nil, agentErr("resize the terminal of "+c.name, err)
	}
	return empty, nil
}

// CloseIO ends a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	c, p, err := s.getProcess(r.GetID(), r.GetExecID())
	if err != nil {
		return nil, err
	}
	if !r.GetStdin() || p.stdin == "" {
		return empty, nil
	}
	inst, _, err := s.instance()
	if err != nil {
		return nil, err
	}
	s.closeStdin(ctx, inst, c.name, p)
	return empty, nil
}

// killExec signals an exec through the agent, as the policy allows.
func (s *Service) killExec(ctx context.Context, c *container, p *process, sig uint32) (*emptypb.Empty, error) {
	id := p.agentExecID()
	if id == "" {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "exec %s has not started", p.execID)
	}
	inst, _, err := s.instance()
	if err != nil {
		return nil, err
	}
	if _, err := inst.Client().SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: c.name, ExecId: id, Signal: int32(sig)}); err != nil {
		if st := status.Code(err); st == codes.NotFound || st == codes.FailedPrecondition {
			return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "process already finished")
		}
		return nil, agentErr(fmt.Sprintf("signal %d to an exec in %s", sig, c.name), err)
	}
	return empty, nil
}
