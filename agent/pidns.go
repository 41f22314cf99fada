package agent

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// PIDHolderArg is the agent's argument that makes it the holder of a pod's
// shared PID namespace (RunPIDHolder) instead of the agent.
const PIDHolderArg = "pid-namespace-holder"

// RunPIDHolder is the init of a pod's shared PID namespace (what a pause
// container is to Kubernetes): it keeps the namespace alive and reaps the
// orphans reparented to it, until it is killed.
func RunPIDHolder() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	chld := make(chan os.Signal, 16)
	signal.Notify(chld, syscall.SIGCHLD)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		<-chld
	}
}

// sharedPIDNamespace returns the path of the pod's shared PID namespace,
// starting its holder on first use. Callers hold a.mu.
func (a *Agent) sharedPIDNamespace() (string, error) {
	if a.pidHolder != nil {
		return fmt.Sprintf("/proc/%d/ns/pid", a.pidHolder.Process.Pid), nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("shared PID namespace: %w", err)
	}
	cmd := exec.Command(self, PIDHolderArg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start the holder of the shared PID namespace: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	a.pidHolder = cmd
	a.log.Info("shared PID namespace created", "holder_pid", cmd.Process.Pid)
	return fmt.Sprintf("/proc/%d/ns/pid", cmd.Process.Pid), nil
}

// stopPIDHolder ends the shared PID namespace's holder (and with it every
// process left in the namespace).
func (a *Agent) stopPIDHolder() {
	a.mu.Lock()
	h := a.pidHolder
	a.pidHolder = nil
	a.mu.Unlock()
	if h != nil {
		_ = h.Process.Kill()
	}
}
