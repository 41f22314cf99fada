package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/image"
)

// Container states.
const (
	stateCreated = "created"
	stateRunning = "running"
	stateExited  = "exited"
)

type container struct {
	spec    *agentv1.ContainerSpec
	img     *image.Image
	bundle  string
	process *specs.Process

	mu       sync.Mutex
	state    string
	exitCode int
	reason   string
	pid      int
	started  time.Time
	finished time.Time
	done     chan struct{}
	// memLimitV1 is the memory limit set on the container's own cgroup at
	// each start (cgroup v1; see oom.go).
	memLimitV1 int64
	// io is the process's stdin and terminal, once started.
	io *procIO
	// execs are the detached execs, by ID, until the host removes them.
	execs   map[string]*execProc
	execSeq int
}

// mountRootfs mounts the image layers (read-only, lowest last in lowerdir)
// with a private upper directory as the container's rootfs.
func mountRootfs(bundle string, layers []string) error {
	if len(layers) == 0 {
		return fmt.Errorf("image has no layers: %w", errInvalid)
	}
	for _, d := range []string{"rootfs", "upper", "work"} {
		if err := os.MkdirAll(filepath.Join(bundle, d), 0o755); err != nil {
			return err
		}
	}
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"),
		filepath.Join(bundle, "upper"), filepath.Join(bundle, "work"))
	if len(opts) >= os.Getpagesize()-1 {
		return fmt.Errorf("image has too many layers (%d) for one overlay mount: %w", len(layers), errInvalid)
	}
	if err := unix.Mount("overlay", filepath.Join(bundle, "rootfs"), "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay rootfs: %w", err)
	}
	return nil
}

func unmountRootfs(bundle string) {
	_ = unix.Unmount(filepath.Join(bundle, "rootfs"), unix.MNT_DETACH)
}

// pipeIO gives runc the write ends of pipes as stdout and stderr (the
// container inherits them: no copy goroutine between the container and the
// log) and optional stdin.
type pipeIO struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func (p pipeIO) Close() error          { return nil }
func (p pipeIO) Stdin() io.WriteCloser { return nil }
func (p pipeIO) Stdout() io.ReadCloser { return nil }
func (p pipeIO) Stderr() io.ReadCloser { return nil }
func (p pipeIO) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.stdin, p.stdout, p.stderr
	cmd.WaitDelay = 2 * time.Second
}

// start runs the container with `runc run` in the background; runc stays the
// container's parent and returns its exit status.
func (a *Agent) start(c *container, lf *logFile) error {
	own := filepath.Join(a.cfg.CgroupParent, c.spec.GetName()) // the container's own cgroup, above runc's leaf
	var oomEv *oomEvent
	if c.memLimitV1 > 0 {
		ev, err := setMemoryLimitV1(own, c.memLimitV1)
		if err != nil {
			return fmt.Errorf("container %q: %w", c.spec.GetName(), err)
		}
		oomEv = ev
	}
	rio, pio, done, ends, err := openIO(lf, c.spec.GetTty(), c.spec.GetStdin())
	if err != nil {
		return fmt.Errorf("container %q: %w", c.spec.GetName(), err)
	}
	started := make(chan int, 1)
	c.mu.Lock()
	c.state, c.started, c.done = stateRunning, time.Now(), make(chan struct{})
	c.mu.Unlock()
	id := c.spec.GetName()
	// runc's own messages go to a JSON log in the bundle, not into the
	// container's output, so a failure to start is told apart from an exit.
	rc := *a.runc
	rc.Log, rc.LogFormat = filepath.Join(c.bundle, "runc.log"), runc.JSON
	_ = os.Remove(rc.Log)
	pidFile := filepath.Join(c.bundle, "pid")
	_ = os.Remove(pidFile)
	pio.pidFile = pidFile
	c.mu.Lock()
	c.io = pio
	c.mu.Unlock()
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		status, err := rc.Run(a.ctx, id, c.bundle, &runc.CreateOpts{IO: rio, Started: started, PidFile: pidFile})
		pio.exited()
		reason := "Completed"
		if msg := runcError(rc.Log); msg != "" {
			reason, status = "StartError: "+msg, 128
		} else if err != nil {
			var ee *runc.ExitError
			if !errors.As(err, &ee) {
				reason = "StartError: " + err.Error()
				if status <= 0 {
					status = 128
				}
			} else if status != 0 {
				reason = "Error"
			}
		}
		if status > 128 && status < 128+65 {
			reason = "Signaled: " + unix.SignalName(syscall.Signal(status-128))
		}
		if oomKilled(own, oomEv) {
			reason = "OOMKilled"
		}
		// Wait (bounded) for the log to drain so readers see every byte.
		drain := time.After(2 * time.Second)
		for _, d := range done {
			select {
			case <-d:
			case <-drain:
			}
		}
		c.mu.Lock()
		c.state, c.exitCode, c.reason, c.finished = stateExited, status, reason, time.Now()
		close(c.done)
		c.mu.Unlock()
		a.log.Info("container exited", "container", id, "exit_code", status, "reason", reason)
	}()
	if pid, ok := <-started; ok {
		pio.started(pid)
	}
	ends.close()
	// Return once runc created the container (it writes the pid file), so
	// that exec and signals work as soon as StartContainer answered.
	for {
		if pid := readPid(pidFile); pid > 0 {
			c.mu.Lock()
			c.pid = pid
			c.mu.Unlock()
			return nil
		}
		select {
		case <-exited:
			return nil
		case <-time.After(time.Millisecond):
		}
	}
}

// runcError returns the last error runc logged, if any.
func runcError(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	msg := ""
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &e) == nil && e.Level == "error" {
			msg = strings.TrimPrefix(e.Msg, "runc run failed: ")
		}
	}
	return msg
}

// limitedBuffer keeps at most max bytes and drops the rest.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

const maxExecOutput = 16 << 20

// exec runs a process in the running container c and returns its exit code
// and output.
func (a *Agent) exec(ctx context.Context, c *container, req *agentv1.ExecProcessRequest) (*agentv1.ExecProcessResponse, error) {
	if req.GetTerminal() || req.GetOpenStdin() {
		return nil, fmt.Errorf("exec in %q: a terminal or an open stdin needs a detached exec (detach): %w", c.spec.GetName(), errInvalid)
	}
	p := execSpec(c, req)
	timeout := time.Duration(req.GetTimeoutSeconds()) * time.Second
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pidFile := filepath.Join(a.cfg.StateDir, "runc", fmt.Sprintf("exec-%d.pid", time.Now().UnixNano()))
	defer os.Remove(pidFile)
	stdout := &limitedBuffer{max: maxExecOutput}
	stderr := &limitedBuffer{max: maxExecOutput}
	io := pipeIO{stdin: bytes.NewReader(req.GetStdin()), stdout: stdout, stderr: stderr}
	// runc exec is not bound to ctx: on timeout the exec'd process itself is
	// killed, and runc then returns its status.
	errc := make(chan error, 1)
	go func() {
		errc <- a.runc.Exec(a.ctx, c.spec.GetName(), *p, &runc.ExecOpts{IO: io, PidFile: pidFile})
	}()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		if pid := readPid(pidFile); pid > 1 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		<-errc
		return nil, fmt.Errorf("exec in %q: timed out after %s: %w", c.spec.GetName(), timeout, context.DeadlineExceeded)
	}
	resp := &agentv1.ExecProcessResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err != nil {
		var ee *runc.ExitError
		if !errors.As(err, &ee) {
			return nil, fmt.Errorf("exec in %q: %w", c.spec.GetName(), err)
		}
		resp.ExitCode = int32(ee.Status)
	}
	return resp, nil
}

// execSpec is the process of an exec in c: the container's, with the
// request's command line, working directory and environment additions.
func execSpec(c *container, req *agentv1.ExecProcessRequest) *specs.Process {
	p := *c.process
	p.Args = req.GetArgs()
	p.Terminal = false
	p.ConsoleSize = nil
	if req.GetWorkingDir() != "" {
		p.Cwd = req.GetWorkingDir()
	}
	env := append([]string{}, p.Env...)
	for _, e := range req.GetEnv() {
		env = append(env, e.GetName()+"="+e.GetValue())
	}
	p.Env = env
	return &p
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
