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

// copyLogs copies a container's output, as the agent lets the host read it,
// to the stdout and stderr fifos containerd gave (which the CRI writes to
// the pod's log file, so `crictl logs` and `kubectl logs` work). A policy
// that turns stdio off denies the reads: the log stays empty.
func (s *Service) copyLogs(inst *sandbox.Instance, c *container) {
	defer close(c.logsDone)
	ctx := context.WithoutCancel(s.ctx)
	out := openOutput(ctx, c.init.stdout)
	if out == nil {
		return
	}
	defer out.Close()
	errw := out
	if c.init.stderr != "" && c.init.stderr != c.init.stdout {
		if e := openOutput(ctx, c.init.stderr); e != nil {
			defer e.Close()
			errw = e
		}
	}
	var off int64
	for {
		resp, err := inst.Client().ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: c.name, Offset: off, WaitMs: 30000, Streams: true})
		if err != nil {
			if st, ok := status.FromError(err); ok && st.Code() == codes.PermissionDenied {
				s.log.Info("the policy does not let the host read this container's output", "container", c.name)
				return
			}
			select {
			case <-inst.Gone():
				return
			case <-c.init.exited:
				return
			default:
			}
			s.log.Warn("read container output", "container", c.name, "error", sandbox.Message(err))
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
