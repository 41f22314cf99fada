package proc

import (
	"os/exec"
	"runtime"
)

// Child is a process started from an OS thread that stays locked, and
// alive, until the process has exited. A child's Pdeathsig fires when the
// thread that forked it exits, not the parent process (golang/go#27505):
// started from an ordinary goroutine, QEMU or the agent could be killed
// whenever the Go runtime retired that thread.
type Child struct {
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartPinned starts cmd from a locked thread that then waits for it. Use
// the Child's Wait, never cmd.Wait.
func StartPinned(cmd *exec.Cmd) (*Child, error) {
	c := &Child{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Unlock only after the child is gone, so that the thread is
		// neither retired nor reused while the child lives.
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

// Wait waits for the child to exit and returns cmd.Wait's result.
func (c *Child) Wait() error {
	<-c.done
	return c.err
}

// Done is closed when the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }
