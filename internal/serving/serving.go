// Package serving starts a cocoon service process (cocoon as serve, cocoon
// kbs serve) and waits until it says it serves: tests and benchmarks use it.
package serving

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const marker = "serving on "

// Start starts cmd, waits up to timeout for its "serving on URL" line on
// standard error and returns the URL; the rest of standard error is drained.
// If it does not serve, Start stops it; otherwise the caller calls Stop.
func Start(cmd *exec.Cmd, timeout time.Duration) (string, error) {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			i := strings.Index(line, marker)
			if i < 0 {
				continue
			}
			if f := strings.Fields(line[i+len(marker):]); len(f) > 0 {
				urlc <- f[0]
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
		}
		urlc <- "" // exited without serving
	}()
	select {
	case u := <-urlc:
		if u == "" {
			Stop(cmd)
			return "", errors.New(cmd.Path + " exited before serving; run it by hand to see why")
		}
		return u, nil
	case <-time.After(timeout):
		Stop(cmd)
		return "", fmt.Errorf("%s did not start serving within %v; run it by hand to see why", cmd.Path, timeout)
	}
}

// Stop kills a process started by Start and waits for it.
func Stop(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Terminate asks a process started by Start to shut down (SIGTERM), so that
// it finishes what it writes on exit (a CPU profile), and kills it if it is
// still running after timeout.
func Terminate(cmd *exec.Cmd, timeout time.Duration) error {
	if cmd.Process == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		<-done
		return nil // already gone
	}
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not shut down within %v of SIGTERM", cmd.Path, timeout)
	}
}
