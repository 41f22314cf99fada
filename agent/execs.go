package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// maxExecs bounds a container's detached execs, running or exited and not
// yet removed by the host.
const maxExecs = 32

// execProc is a detached exec: a process in a container that the host talks
// to request by request (output, stdin, terminal size, exit), as kubectl
// exec -it and the CRI's streaming exec need.
type execProc struct {
	id      string
	io      *procIO
	log     *logFile
	logPath string
	done    chan struct{} // closed at exit, once its output drained
	code    int
}

// exitCode returns the exit status once the exec has exited.
func (e *execProc) exitCode() (int, bool) {
	select {
	case <-e.done:
		return e.code, true
	default:
		return 0, false
	}
}

// readPid reads a pid file runc wrote (0 when absent).
func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// execDetached starts an exec in the running container c and answers with
// its ID as soon as runc runs it; the process stays runc's child, so its
// exit status is runc's.
func (a *Agent) execDetached(c *container, req *agentv1.ExecProcessRequest) (*agentv1.ExecProcessResponse, error) {
	name := c.spec.GetName()
	if len(req.GetStdin()) > 0 {
		return nil, fmt.Errorf("exec in %q: stdin bytes go with a blocking exec; a detached one takes open_stdin and WriteStdin: %w", name, errInvalid)
	}
	if req.GetTimeoutSeconds() != 0 {
		return nil, fmt.Errorf("exec in %q: a detached exec has no timeout; signal it to end it: %w", name, errInvalid)
	}
	c.mu.Lock()
	if len(c.execs) >= maxExecs {
		c.mu.Unlock()
		return nil, fmt.Errorf("container %q has %d detached execs, the most it keeps; remove exited ones (RemoveContainer with their exec_id): %w", name, maxExecs, errState)
	}
	c.execSeq++
	id := "e" + strconv.Itoa(c.execSeq)
	c.mu.Unlock()

	logPath := filepath.Join(c.bundle, "exec-"+id+".log")
	lf, err := newLogFile(logPath)
	if err != nil {
		return nil, fmt.Errorf("exec in %q: %w", name, err)
	}
	rio, pio, drained, ends, err := openIO(lf, req.GetTerminal(), req.GetOpenStdin())
	if err != nil {
		lf.close()
		_ = os.Remove(logPath)
		return nil, fmt.Errorf("exec in %q: %w", name, err)
	}
	pio.pidFile = filepath.Join(c.bundle, "exec-"+id+".pid")
	e := &execProc{id: id, io: pio, log: lf, logPath: logPath, done: make(chan struct{})}
	c.mu.Lock()
	if c.execs == nil {
		c.execs = map[string]*execProc{}
	}
	c.execs[id] = e
	c.mu.Unlock()

	p := execSpec(c, req)
	p.Terminal = req.GetTerminal()
	started := make(chan int, 1)
	go func() {
		err := a.runc.Exec(a.ctx, name, *p, &runc.ExecOpts{IO: rio, PidFile: pio.pidFile, Started: started})
		pio.exited()
		code := 0
		if err != nil {
			var ee *runc.ExitError
			if errors.As(err, &ee) {
				code = ee.Status
			} else {
				code = 126
				a.log.Warn("detached exec did not run", "container", name, "exec", id, "error", err)
			}
		}
		drain := time.After(2 * time.Second)
		for _, d := range drained {
			select {
			case <-d:
			case <-drain:
			}
		}
		e.code = code
		close(e.done)
	}()
	if pid, ok := <-started; ok {
		pio.started(pid)
	}
	ends.close()
	return &agentv1.ExecProcessResponse{ExecId: id}, nil
}

// execOf returns a detached exec of c.
func (c *container) execOf(id string) (*execProc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.execs[id]
	if !ok {
		return nil, fmt.Errorf("container %q has no exec %q: %w", c.spec.GetName(), id, errNotFound)
	}
	return e, nil
}

// procIO returns the interactive I/O of a container's process or of one of
// its detached execs.
func (a *Agent) procIO(container, execID string) (*procIO, string, error) {
	c, err := a.get(container)
	if err != nil {
		return nil, "", err
	}
	return c.procIOOf(execID)
}

// procIOOf returns the interactive I/O of c's process (execID "") or of one
// of its detached execs, and how to name it in errors.
func (c *container) procIOOf(execID string) (*procIO, string, error) {
	if execID != "" {
		e, err := c.execOf(execID)
		if err != nil {
			return nil, "", err
		}
		return e.io, fmt.Sprintf("exec %q in %q", execID, c.spec.GetName()), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	what := fmt.Sprintf("container %q", c.spec.GetName())
	if c.io == nil {
		return nil, "", fmt.Errorf("%s has not started: %w", what, errState)
	}
	return c.io, what, nil
}

// signalExec sends sig to a detached exec's process.
func (c *container) signalExec(execID string, sig int) error {
	e, err := c.execOf(execID)
	if err != nil {
		return err
	}
	if _, exited := e.exitCode(); exited {
		return fmt.Errorf("exec %q in %q has exited: %w", execID, c.spec.GetName(), errState)
	}
	pid := readPid(e.io.pidFile)
	if pid <= 1 {
		return fmt.Errorf("exec %q in %q is not running yet: %w", execID, c.spec.GetName(), errState)
	}
	if err := unix.Kill(pid, unix.Signal(sig)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal exec %q in %q: %w", execID, c.spec.GetName(), err)
	}
	return nil
}

// removeExec forgets an exited detached exec and its output.
func (c *container) removeExec(execID string) error {
	e, err := c.execOf(execID)
	if err != nil {
		return err
	}
	if _, exited := e.exitCode(); !exited {
		return fmt.Errorf("exec %q in %q is running; signal it and wait for its exit first: %w", execID, c.spec.GetName(), errState)
	}
	c.mu.Lock()
	delete(c.execs, execID)
	c.mu.Unlock()
	e.drop()
	return nil
}

// drop releases an exec's log.
func (e *execProc) drop() {
	_ = e.log.close()
	_ = os.Remove(e.logPath)
}

// dropExecs releases every detached exec of a removed container.
func (c *container) dropExecs() {
	c.mu.Lock()
	execs := c.execs
	c.execs = nil
	c.mu.Unlock()
	for _, e := range execs {
		e.drop()
	}
}
