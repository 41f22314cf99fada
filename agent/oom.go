package agent

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// OOM kills are told after a container exited, although runc removes the
// container's cgroup (a leaf below one of the container's own, parent) when
// it exits:
//   - cgroup v2: the parent's memory.events counts its descendants'
//     oom_kill and outlives runc's cleanup;
//   - cgroup v1, where memcg event counters are not hierarchical: the
//     memory limit is set on the parent rather than the leaf, so the OOM
//     happens there, and an eventfd registered on the parent's
//     memory.oom_control before the container starts is signalled.

const (
	cgroupRoot   = "/sys/fs/cgroup"
	cgroupV1Mem  = "/sys/fs/cgroup/memory"
	oomKillField = "oom_kill"
)

// cgroupV1 reports whether the memory controller is cgroup v1's.
func cgroupV1() bool {
	_, err := os.Stat(filepath.Join(cgroupV1Mem, "memory.limit_in_bytes"))
	return err == nil
}

// moveMemoryLimitV1 takes the memory limit off the runtime spec on cgroup v1
// and returns it, to be set on the container's own cgroup at each start.
func moveMemoryLimitV1(s *specs.Spec) int64 {
	if !cgroupV1() || s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Memory == nil || s.Linux.Resources.Memory.Limit == nil {
		return 0
	}
	lim := *s.Linux.Resources.Memory.Limit
	s.Linux.Resources.Memory = nil
	return lim
}

// oomEvent is a cgroup v1 OOM notification: an eventfd registered on a
// memory cgroup's memory.oom_control.
type oomEvent struct {
	ctl *os.File
	efd int
}

// setMemoryLimitV1 creates the container's own memory cgroup (v1) with the
// limit and registers for its OOM notifications; runc creates the leaf
// below it.
func setMemoryLimitV1(parent string, limit int64) (*oomEvent, error) {
	dir := filepath.Join(cgroupV1Mem, parent)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("memory cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), fmt.Appendf(nil, "%d", limit), 0); err != nil {
		return nil, fmt.Errorf("memory limit: %w", err)
	}
	ctl, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return nil, fmt.Errorf("memory cgroup: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), fmt.Appendf(nil, "%d %d", efd, ctl.Fd()), 0); err != nil {
		ctl.Close()
		unix.Close(efd)
		return nil, fmt.Errorf("OOM notification: %w", err)
	}
	return &oomEvent{ctl: ctl, efd: efd}, nil
}

// fired reports whether the notification was signalled (before the cgroup
// is removed, which signals it too), and releases it.
func (e *oomEvent) fired() bool {
	if e == nil {
		return false
	}
	defer e.ctl.Close()
	defer unix.Close(e.efd)
	var b [8]byte
	n, err := unix.Read(e.efd, b[:])
	return err == nil && n == 8 && binary.LittleEndian.Uint64(b[:]) > 0
}

// oomKilled reports whether the OOM killer killed a process of the
// container (ev: its v1 notification, if any), and removes the container's
// own cgroup (v1 and v2).
func oomKilled(parent string, ev *oomEvent) bool {
	v2, v1 := filepath.Join(cgroupRoot, parent), filepath.Join(cgroupV1Mem, parent)
	defer os.Remove(v2)
	defer os.Remove(v1)
	if ev.fired() {
		return true
	}
	b, err := os.ReadFile(filepath.Join(v2, "memory.events"))
	return err == nil && oomKillCount(string(b))
}

// oomKillCount reports a non-zero oom_kill line (memory.events in v2,
// memory.oom_control in v1).
func oomKillCount(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == oomKillField && f[1] != "0" {
			return true
		}
	}
	return false
}
