// Package hostmount opens LUKS2 volumes on the host, outside any pod (`cocoon
// volume open` / `close`): a background server process holds the key and
// serves the decrypted device; a state file under the runtime root names
// it by PID, start time and boot, so close never signals another process.
// Host only: the agent opens volumes itself (package volume).
package hostmount

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/internal/proc"
)

// State is what is recorded of an opened volume.
type State struct {
	Target string `json:"target"`
	Image  string `json:"image"`
	// The volume server, named across PID reuse and reboots.
	proc.Identity
}

// StatePath is where the state of the volume mounted at target lives under
// the runtime root.
func StatePath(root, target string) string {
	abs, _ := filepath.Abs(target)
	s := sha256.Sum256([]byte(abs))
	return filepath.Join(root, "volumes", hex.EncodeToString(s[:8])+".json")
}

// Open starts the volume server — server makes the command that serves the
// image at target with the given FUSE directory —, feeds it the key on
// standard input, waits for its "ready" line and records it. The server
// outlives the caller: its log goes to a file beside its state (LogPath),
// never to the caller's standard error, which it would otherwise hold open.
func Open(root, image, target string, pass []byte, server func(fuseDir, target string) *exec.Cmd) error {
	abs, _ := filepath.Abs(target)
	statePath := StatePath(root, abs)
	if _, err := os.Stat(statePath); err == nil {
		return fmt.Errorf("%s already has a volume open; close it first", target)
	}
	c := server(statePath+".fuse", abs)
	c.Stdin = strings.NewReader(string(pass))
	out, err := c.StdoutPipe()
	if err != nil {
		return err
	}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := os.MkdirAll(filepath.Dir(statePath), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(LogPath(statePath), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	c.Stderr = logf
	if err := c.Start(); err != nil {
		return err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	line = strings.TrimSpace(line)
	if line != "ready" {
		_ = c.Process.Kill()
		_ = c.Wait()
		if line == "" {
			line = "the volume server exited (see " + LogPath(statePath) + ")"
		}
		return errors.New(strings.TrimPrefix(line, "error: "))
	}
	go func() { _ = c.Wait() }()
	id, err := proc.Of(c.Process.Pid)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(State{Target: abs, Image: image, Identity: id})
	return os.WriteFile(statePath, b, 0o600)
}

// LogPath is the server's log beside its state file.
func LogPath(statePath string) string { return strings.TrimSuffix(statePath, ".json") + ".log" }

// Close stops the server of the volume mounted at target (SIGTERM through a
// pidfd, then up to 5 s for it to unmount and exit) and forgets it. A server
// that is already gone — or whose PID now names another process — is not
// signalled; its state is removed.
func Close(root, target string) error {
	p := StatePath(root, target)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("%s is not a volume opened by cocoon (%w)", target, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("volume state %s: %w", p, err)
	}
	h, err := st.Identity.Open()
	if errors.Is(err, proc.ErrGone) {
		_ = os.Remove(LogPath(p))
		return os.Remove(p)
	}
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.Signal(unix.SIGTERM); err != nil && !errors.Is(err, proc.ErrGone) {
		return err
	}
	for i := 0; i < 200 && h.Alive(); i++ {
		time.Sleep(25 * time.Millisecond)
	}
	if h.Alive() {
		return fmt.Errorf("the volume server (pid %d) did not stop within 5 s (see %s)", st.PID, LogPath(p))
	}
	_ = os.Remove(LogPath(p))
	return os.Remove(p)
}
