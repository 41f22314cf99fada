// Package proc names host processes across PID reuse and reboots, so a
// signal sent to a PID read from a state file reaches the process that wrote
// it and never an unrelated one that later got the same PID.
//
// An Identity is a PID with the process's start time (clock ticks since
// boot, /proc/PID/stat field 22) and the boot's ID. Open turns it into a
// pidfd only when the process behind the PID is still that one; signals then
// go through the pidfd (pidfd_send_signal), which cannot be redirected by
// PID reuse.
package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Identity is a process as it was recorded.
type Identity struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	Boot  string `json:"boot"`
}

// ErrGone means the recorded process no longer runs (it exited, the PID
// now belongs to another process, or the machine rebooted).
var ErrGone = errors.New("the process is gone")

// Of records the identity of the running process pid.
func Of(pid int) (Identity, error) {
	start, _, err := stat(pid)
	if err != nil {
		return Identity{}, err
	}
	boot, err := bootID()
	if err != nil {
		return Identity{}, err
	}
	return Identity{PID: pid, Start: start, Boot: boot}, nil
}

// Handle is an open pidfd of an identified process.
type Handle struct {
	fd int
	id Identity
}

// Open returns a pidfd for id's process, or an error wrapping ErrGone when
// the PID is free or belongs to another process (or another boot). The
// pidfd is opened first and the start time checked after: if it matches,
// the pidfd refers to the recorded process (a PID names one process at a
// time, and the recorded one started before the record was written).
func (id Identity) Open() (*Handle, error) {
	if id.PID <= 0 || id.Start == 0 || id.Boot == "" {
		return nil, fmt.Errorf("pid %d: no start time or boot recorded, so it cannot be told from another process: %w", id.PID, ErrGone)
	}
	if boot, err := bootID(); err != nil || boot != id.Boot {
		return nil, fmt.Errorf("pid %d was recorded before the machine rebooted: %w", id.PID, ErrGone)
	}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w", id.PID, ErrGone)
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", id.PID, err)
	}
	start, zombie, err := stat(id.PID)
	if err != nil || start != id.Start || zombie {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d is no longer the recorded process: %w", id.PID, ErrGone)
	}
	return &Handle{fd: fd, id: id}, nil
}

// Alive reports whether id's process still runs (a zombie does not).
func (id Identity) Alive() bool {
	h, err := id.Open()
	if err != nil {
		return false
	}
	defer h.Close()
	return h.Alive()
}

// Signal sends sig to id's process if it still runs; ErrGone otherwise.
func (id Identity) Signal(sig unix.Signal) error {
	h, err := id.Open()
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Signal(sig)
}

// Signal sends sig through the pidfd.
func (h *Handle) Signal(sig unix.Signal) error {
	if err := unix.PidfdSendSignal(h.fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", h.id.PID, ErrGone)
		}
		return fmt.Errorf("signal pid %d: %w", h.id.PID, err)
	}
	return nil
}

// Alive reports whether the process has neither exited nor become a zombie.
func (h *Handle) Alive() bool {
	if unix.PidfdSendSignal(h.fd, 0, nil, 0) != nil {
		return false
	}
	_, zombie, err := stat(h.id.PID)
	return err == nil && !zombie
}

// Close releases the pidfd.
func (h *Handle) Close() error { return unix.Close(h.fd) }

// stat reads a process's start time and whether it is a zombie.
func stat(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("pid %d: malformed /proc stat", pid)
	}
	// After "comm)": state is field 3, starttime field 22.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false, fmt.Errorf("pid %d: malformed /proc stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("pid %d: start time: %w", pid, err)
	}
	return start, f[0] == "Z" || f[0] == "X", nil
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
