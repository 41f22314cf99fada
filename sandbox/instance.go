package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/pod"
)

// Instance is a sandbox whose containers another runtime drives one request
// at a time (containerd's shim), rather than the pod lifecycle of `cocoon
// run`: the agent is launched, the TEE measures it and the policy is bound,
// and the caller creates, starts and stops containers through Client.
type Instance struct {
	s *shim
}

// LaunchOptions says how to launch an Instance.
type LaunchOptions struct {
	// Options carries the backend settings (Root, Isolation, TEE,
	// AgentBinary, Runc, SimState, GuestDir, QEMU, Firmware,
	// BootTimeout); PodYAML, ShimCommand and BaseDir are not used.
	Options
	// Dir is the sandbox's directory; it must not exist. Its parent's
	// parent is the runtime root (the verified layer cache is shared there).
	Dir string
	// Pod names the sandbox and carries its hostname, volumes, encrypted
	// volumes and the policy annotation.
	Pod *pod.Pod
	// NetNS is the network namespace to join ("" for a new one).
	NetNS string
	// Log receives the runtime's structured log.
	Log *slog.Logger
}

// Launch creates the sandbox directory, starts the agent (or VM) and creates
// the sandbox with the pod's policy. On error nothing is left running and
// the directory is removed.
func Launch(ctx context.Context, o LaunchOptions) (*Instance, error) {
	if o.Pod == nil {
		return nil, errors.New("launch: no pod")
	}
	if _, err := os.Stat(o.AgentBinary); err != nil {
		return nil, fmt.Errorf("cocoon-agent binary: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.Dir), 0o700); err != nil {
		return nil, fmt.Errorf("create runtime state directory: %w", err)
	}
	if err := os.Mkdir(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create sandbox directory: %w", err)
	}
	cfg := config{Isolation: "process", AgentBinary: o.AgentBinary, Runc: o.Runc,
		CgroupParent: "/cocoon/" + filepath.Base(o.Dir), NetNS: o.NetNS}
	if err := o.isolation(o.Pod, &cfg); err != nil {
		os.RemoveAll(o.Dir)
		return nil, err
	}
	if err := writeJSONAtomic(filepath.Join(o.Dir, fileConfig), cfg); err != nil {
		os.RemoveAll(o.Dir)
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := shimOf(o.Dir, log, cfg, o.Pod, Status{Name: o.Pod.Name, Phase: PhasePending, Isolation: cfg.Isolation, Created: time.Now()})
	if err != nil {
		os.RemoveAll(o.Dir)
		return nil, err
	}
	if err := s.launch(); err != nil {
		s.shutdown()
		os.RemoveAll(o.Dir)
		return nil, err
	}
	s.update(func(st *Status) { st.Phase = PhaseRunning })
	return &Instance{s: s}, nil
}

// Client is the agent API of the sandbox.
func (i *Instance) Client() *Client { return i.s.cl }

// PID is the agent's (process backend) or QEMU's process ID.
func (i *Instance) PID() int {
	if i.s.agentProc == nil {
		return 0
	}
	return i.s.agentProc.Cmd.Process.Pid
}

// Gone is closed when the agent (or QEMU) has exited.
func (i *Instance) Gone() <-chan struct{} { return i.s.agentGone }

// Status is the sandbox's recorded status (TEE, measurement, timings).
func (i *Instance) Status() Status {
	i.s.mu.Lock()
	defer i.s.mu.Unlock()
	return i.s.st
}

// Shutdown stops every container, ends the agent and removes the sandbox's
// directory.
func (i *Instance) Shutdown() {
	i.s.shutdown()
	_ = os.RemoveAll(i.s.dir)
}

// Cleanup removes what a launched sandbox left in dir when its runtime
// process died without shutting it down: the agent (or QEMU) is killed if it
// is still the process recorded, its cgroups and the directory removed.
func Cleanup(dir string) error {
	var st Status
	if b, err := os.ReadFile(filepath.Join(dir, fileStatus)); err == nil && json.Unmarshal(b, &st) == nil {
		_ = st.agent().Signal(unix.SIGKILL)
	}
	var cfg config
	if b, err := os.ReadFile(filepath.Join(dir, fileConfig)); err == nil && json.Unmarshal(b, &cfg) == nil {
		removeCgroups(cfg.CgroupParent)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove sandbox directory: %w", err)
	}
	return nil
}
