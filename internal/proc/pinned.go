package proc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
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
	return StartPinnedIn(cmd, "")
}

// StartPinnedIn is StartPinned with the child in the network namespace at
// netns (a path such as /var/run/netns/NAME or /proc/PID/ns/net; "" for
// the caller's). Only the locked thread enters the namespace, for the fork,
// and returns to its own at once; should that fail, the thread is never
// unlocked, so the Go runtime retires it rather than reuse it.
func StartPinnedIn(cmd *exec.Cmd, netns string) (*Child, error) {
	c := &Child{Cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		clean, err := startIn(cmd, netns)
		// Unlock only after the child is gone, so that the thread is
		// neither retired nor reused while the child lives; never unlock
		// a thread left in another namespace.
		if clean {
			defer runtime.UnlockOSThread()
		}
		if err != nil {
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

// startIn starts cmd from the current (locked) thread, in netns if given.
// clean reports whether the thread is back in its own namespace.
func startIn(cmd *exec.Cmd, netns string) (clean bool, err error) {
	if netns == "" {
		return true, cmd.Start()
	}
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("own network namespace: %w", err)
	}
	defer orig.Close()
	if err := setNetNS(netns); err != nil {
		return false, err
	}
	err = cmd.Start()
	clean = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil
	return clean, err
}

// Wait waits for the child to exit and returns cmd.Wait's result.
func (c *Child) Wait() error {
	<-c.done
	return c.err
}

// Done is closed when the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

func setNetNS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	return nil
}
