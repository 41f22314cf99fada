package shimv2

import (
	"context"
	"fmt"
	"io"
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
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/sandbox"
)

const (
	// maxExecStdin bounds what an exec's stdin may carry (the agent API
	// passes it in one message).
	maxExecStdin = 1 << 20
	// execTimeoutSeconds is how long an exec may run.
	execTimeoutSeconds = 600
	// execDenied is an exec's exit status when the agent refused it; the
	// explanation goes to its stderr.
	execDenied = 126
)

// Exec adds an exec process to a container. Only its command line reaches
// the agent: an exec runs with the container's environment, user and
// working directory, which the policy pinned at create.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	c, err := s.get(r.GetID())
	if err != nil {
		return nil, err
	}
	if r.GetTerminal() {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "exec with a terminal (-t) is not supported yet by the cocoon runtime; exec without -t")
	}
	v, err := typeurl.UnmarshalAny(r.GetSpec())
	if err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec spec: %v", err)
	}
	ps, ok := v.(*specs.Process)
	if !ok || len(ps.Args) == 0 {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec spec has no command")
	}
	p := newProcess(r.GetID(), r.GetExecID(), r.GetStdin(), r.GetStdout(), r.GetStderr(), false)
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

// startExec runs the exec through the agent: the policy decides whether the
// command may run. A refusal ends the exec with status 126 and the agent's
// explanation on its stderr, as a shell reports a command it cannot run.
func (s *Service) startExec(ctx context.Context, inst *sandbox.Instance, c *container, p *process) (*taskAPI.StartResponse, error) {
	if st, _, _, _ := c.init.state(); st != task.Status_RUNNING {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is not running", c.name)
	}
	started := false
	p.startOnce.Do(func() { started = true })
	if !started {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s was started already", p.execID)
	}
	p.setRunning(0)
	s.send(&eventstypes.TaskExecStarted{ContainerID: c.init.id, ExecID: p.execID})
	go func() {
		bg := context.WithoutCancel(s.ctx)
		var stdin []byte
		if p.stdin != "" {
			var err error
			if stdin, err = readStdin(bg, p.stdin); err != nil {
				s.finishExec(bg, c, p, nil, []byte("cocoon: "+err.Error()+"\n"), execDenied)
				return
			}
		}
		resp, err := inst.Client().ExecProcess(bg, &agentv1.ExecProcessRequest{
			Container: c.name, Args: p.spec.Args, Stdin: stdin, TimeoutSeconds: execTimeoutSeconds,
		})
		if err != nil {
			msg := sandbox.Message(err)
			if st, ok := status.FromError(err); ok {
				msg = st.Code().String() + ": " + st.Message()
			}
			s.finishExec(bg, c, p, nil, []byte("cocoon: exec refused: "+msg+"\n"), execDenied)
			return
		}
		s.finishExec(bg, c, p, resp.GetStdout(), resp.GetStderr(), uint32(resp.GetExitCode()))
	}()
	return &taskAPI.StartResponse{}, nil
}

func (s *Service) finishExec(ctx context.Context, c *container, p *process, stdout, stderr []byte, code uint32) {
	for _, o := range []struct {
		path string
		b    []byte
	}{{p.stdout, stdout}, {p.stderr, stderr}} {
		if w := openOutput(ctx, o.path); w != nil {
			_, _ = w.Write(o.b)
			w.Close()
		}
	}
	s.exit(c, p, code, time.Now())
}

// readStdin reads an exec's stdin to its end, bounded.
func readStdin(ctx context.Context, path string) ([]byte, error) {
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open exec stdin: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxExecStdin+1))
	if err != nil {
		return nil, fmt.Errorf("read exec stdin: %w", err)
	}
	if len(b) > maxExecStdin {
		return nil, fmt.Errorf("exec stdin is larger than %d bytes; interactive exec is not supported yet", maxExecStdin)
	}
	return b, nil
}

// ResizePty is refused: no process of the cocoon runtime has a terminal yet.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPCf(errdefs.ErrNotImplemented, "no process of the cocoon runtime has a terminal")
}

// CloseIO acknowledges the end of stdin (an exec reads it to its end).
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	if _, _, err := s.getProcess(r.GetID(), r.GetExecID()); err != nil {
		return nil, err
	}
	return empty, nil
}
