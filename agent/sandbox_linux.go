package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SetupSandbox prepares the agent's namespaces when it starts as the init of
// a fresh sandbox (new mount, pid, ipc, uts and network namespaces): mounts
// stop propagating to the host, /proc shows the sandbox's processes, the
// state directory becomes a private tmpfs and loopback comes up.
func SetupSandbox(stateDir string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	if err := unix.Mount("tmpfs", stateDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("mount private state tmpfs: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("bring up loopback: %w", err)
	}
	return nil
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// ReapOrphans reaps zombies re-parented to the agent when it is the
// sandbox's init. To never steal the status of a child some exec.Cmd is
// about to wait for, it reaps only processes seen as zombies in two scans
// one interval apart.
func ReapOrphans(ctx context.Context, interval time.Duration) {
	seen := map[int]bool{}
	t := time.NewTicker(interval)
	defer t.Stop()
	self := os.Getpid()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := map[int]bool{}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			// Fields after the command: state ppid ...
			i := strings.LastIndexByte(string(b), ')')
			f := strings.Fields(string(b[i+1:]))
			if len(f) < 2 || f[0] != "Z" || f[1] != strconv.Itoa(self) {
				continue
			}
			if seen[pid] {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
				continue
			}
			now[pid] = true
		}
		seen = now
	}
}
