// Command cocoon runs unmodified OCI container images in confidential
// sandboxes. See `cocoon --help`.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/google/logger"
)

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() { os.Exit(run()) }

// run runs the command and returns the process's exit code.
func run() int {
	// go-sev-guest and go-tdx-guest log warnings through google/logger;
	// cocoon reports what matters itself.
	logger.Init("cocoon", false, false, io.Discard)
	// COCOON_CPUPROFILE=FILE: a CPU profile of this process until it exits
	// (the benchmarks profile the services with it).
	if path := os.Getenv("COCOON_CPUPROFILE"); path != "" {
		// This process's only: the processes it starts (a sandbox's
		// runtime process) would write the same file.
		_ = os.Unsetenv("COCOON_CPUPROFILE")
		stop, err := startCPUProfile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cocoon: COCOON_CPUPROFILE:", err)
			return 1
		}
		defer stop()
	}
	root := newRootCmd()
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "cocoon:", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "cocoon:", err)
	return 1
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
