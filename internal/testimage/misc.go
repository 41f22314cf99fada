package testimage

import (
	"io"
	"log"
	"runtime"
)

func goarch() string { return runtime.GOARCH }

func nilLogger() *log.Logger { return log.New(io.Discard, "", 0) }
