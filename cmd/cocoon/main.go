// Command cocoon runs unmodified OCI container images in confidential
// sandboxes. See `cocoon --help`.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/logger"
)

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	// go-sev-guest and go-tdx-guest log warnings through google/logger;
	// cocoon reports what matters itself.
	logger.Init("cocoon", false, false, io.Discard)
	root := newRootCmd()
	err := root.Execute()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "cocoon:", ee.msg)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "cocoon:", err)
	os.Exit(1)
}
