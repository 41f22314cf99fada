// Package testtpm starts a software TPM 2.0 (swtpm, from Debian's swtpm
// package: libtpms, a full TPM implementation) for one test, on a Unix
// socket in the test's own directory, and stops it when the test ends.
package testtpm

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// Start runs swtpm for t and returns a transport to it. Without swtpm the
// test is skipped, except under CI, where it fails.
func Start(t testing.TB) transport.TPMCloser {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swtpm is missing (Debian package swtpm; scripts/deps.sh --test installs it)")
		}
		t.Skip("needs swtpm (Debian package swtpm)")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--flags", "not-need-init,startup-clear", "--log", "file="+filepath.Join(dir, "swtpm.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// swtpm binds the socket, then listens: ready once a connection is
	// accepted (swtpm serves one connection at a time; this one closes).
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
			t.Fatalf("swtpm exited: %v\n%s", err, log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal(errors.New("swtpm did not accept a connection on its socket within 10 s"))
		}
	}
	tpm, err := linuxudstpm.Open(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tpm.Close() })
	return tpm
}
