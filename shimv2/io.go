package shimv2

import (
	"context"
	"io"
	"syscall"

	"github.com/containerd/fifo"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/sandbox"
)

// openOutput opens the fifo containerd reads a stream from ("" or a
// failure: nowhere).
func openOutput(ctx context.Context, path string) io.WriteCloser {
	if path == "" {
		return nil
	}
	f, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		return nil
	}
	return f
}

// output is where a process's output goes: the fifos containerd gave for
// a container (or one of its execs, execID set).
type output struct {
	container, execID string
	stdout, stderr    string
	// done is closed when the copy has ended.
	done chan struct{}
}

// copyOutput copies a process's output, as the agent lets the host read
// it, to the stdout and stderr fifos containerd gave (for a container the
// CRI writes them to the pod's log file, so `crictl logs` and `kubectl
// logs` work). A policy that turns a container's stdio off denies the
// reads: the log stays empty.
func (s *Service) copyOutput(inst *sandbox.Instance, o *output, exited <-chan struct{}) {
	defer close(o.done)
	ctx := context.WithoutCancel(s.ctx)
	out := openOutput(ctx, o.stdout)
	if out == nil {
		return
	}
	defer out.Close()
	errw := out
	if o.stderr != "" && o.stderr != o.stdout {
		if e := openOutput(ctx, o.stderr); e != nil {
			defer e.Close()
			errw = e
		}
	}
	var off int64
	for {
		resp, err := inst.Client().ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: o.container, ExecId: o.execID, Offset: off, WaitMs: 30000, Streams: true})
		if err != nil {
			if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied {
				s.log.Info("the policy does not let the host read this container's output", "container", o.container)
				return
			}
			select {
			case <-inst.Gone():
				return
			case <-exited:
				return
			default:
			}
			s.log.Warn("read output", "container", o.container, "exec", o.execID, "error", sandbox.Message(err))
			return
		}
		for _, ch := range resp.GetChunks() {
			w := out
			if ch.GetStream() == agentv1.LogStream_STDERR {
				w = errw
			}
			if _, err := w.Write(ch.GetData()); err != nil {
				return
			}
		}
		off = resp.GetNextOffset()
		if resp.GetEof() {
			return
		}
	}
}
