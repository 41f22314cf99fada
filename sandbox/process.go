package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"cocoon.dev/cocoon/internal/proc"
	"cocoon.dev/cocoon/tee"
)

// startProcessAgent is the "process" isolation backend: cocoon-agent becomes
// the init of fresh mount, pid, ipc, uts and network namespaces (or of the
// network namespace cfg.NetNS names), with a private tmpfs state directory. It returns once the agent listens.
func startProcessAgent(cfg *config, dir, layers string) (*proc.Child, error) {
	logf, err := os.OpenFile(filepath.Join(dir, fileAgentLg), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	args := []string{
		"--sandbox", "--ready-fd", "3",
		"--socket", filepath.Join(dir, fileAgentSk),
		"--state", filepath.Join(dir, dirAgent),
		"--layers", layers,
		"--egress", filepath.Join(dir, fileEgress),
		"--cgroup-parent", cfg.CgroupParent,
	}
	if cfg.Runc != "" {
		args = append(args, "--runc", cfg.Runc)
	}
	if cfg.TEE == tee.Sim {
		args = append(args, "--sim-sp", filepath.Join(dir, fileSimSP))
	}
	cmd := exec.Command(cfg.AgentBinary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS)
	if cfg.NetNS == "" {
		flags |= syscall.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL}
	child, err := proc.StartPinnedIn(cmd, cfg.NetNS)
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("start cocoon-agent (%s): %w", cfg.AgentBinary, err)
	}
	pw.Close()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		if l == "ready" {
			return child, nil
		}
		_ = cmd.Process.Kill()
		_ = child.Wait()
		if l == "" {
			l = "exited before it was ready"
		}
		return nil, fmt.Errorf("cocoon-agent: %s (see %s)", strings.TrimPrefix(l, "error: "), filepath.Join(dir, fileAgentLg))
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		_ = child.Wait()
		return nil, fmt.Errorf("cocoon-agent did not become ready in 20s (see %s)", filepath.Join(dir, fileAgentLg))
	}
}

// removeCgroups removes the (empty) cgroups runc left under parent in every
// hierarchy, deepest first.
func removeCgroups(parent string) {
	if parent == "" || parent == "/" {
		return
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		base := filepath.Join(r, parent)
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}
