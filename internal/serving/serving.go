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
