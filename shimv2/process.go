package shimv2

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/containerd/api/types/task"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// process is a container's init process or one exec, as containerd sees it.
type process struct {
	id, execID            string
	stdin, stdout, stderr string
	terminal              bool
	spec                  *specs.Process // execs only
	mu                    sync.Mutex
	status                task.Status
	pid                   uint32
	exitStatus            uint32
	exitedAt              time.Time
	exited                chan struct{}
	exitOnce              sync.Once
	startOnce             sync.Once
	closeStdinOnce        sync.Once
	// agentExec is the agent's ID of a started exec.
	agentExec string
}

// agentExecID is the agent's ID of the process: "" for a container's init.
func (p *process) agentExecID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.agentExec
}

func newProcess(id, execID, stdin, stdout, stderr string, terminal bool) *process {
	return &process{id: id, execID: execID, stdin: stdin, stdout: stdout, stderr: stderr,
		terminal: terminal, status: task.Status_CREATED, exited: make(chan struct{})}
}

// setExited records the exit once; it reports whether this call did.
func (p *process) setExited(code uint32, at time.Time) bool {
	did := false
	p.exitOnce.Do(func() {
		p.mu.Lock()
		p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, code, at
		p.mu.Unlock()
		close(p.exited)
		did = true
	})
	return did
}

func (p *process) setRunning(pid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == task.Status_CREATED {
		p.status, p.pid = task.Status_RUNNING, pid
	}
}

func (p *process) state() (task.Status, uint32, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.pid, p.exitStatus, p.exitedAt
}

// wait blocks until the process has exited or ctx ends.
func (p *process) wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// container is a task: the pod sandbox (the CRI's pause container, which
// is the cocoon sandbox itself) or an application container.
type container struct {
	init    *process
	bundle  string
	sandbox bool
	// name is the container's name in the pod: the agent's and the
	// policy's key.
	name  string
	execs map[string]*process
	// logsDone is closed when the copy of its output has ended.
	logsDone chan struct{}
}
