package shimv2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"

	"cocoon.dev/cocoon/sandbox"
)

// Manager starts and cleans up the cocoon shim (containerd's shim manager).
type Manager struct {
	// Version is reported by Info.
	Version string
}

var _ shim.Shim = Manager{}

// Name is the runtime type.
func (Manager) Name() string { return RuntimeType }

// fileSandboxDir, in a sandbox task's bundle, names the cocoon sandbox's
// directory, so that a cleanup after a dead shim finds it.
const fileSandboxDir = "cocoon-sandbox-dir"

// defaultSocketDir is where shim sockets go when containerd does not say.
const defaultSocketDir = "/run/containerd/s"

// Start starts (or finds) the shim serving the task's pod: every container
// of one pod shares the shim of its sandbox (the CRI's sandbox-id
// annotation), which owns the cocoon sandbox. It runs in the bundle
// directory.
func (Manager) Start(ctx context.Context, opts *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := opts.GetInstanceID()
	spec, err := readSpec(".")
	if err != nil {
		return nil, err
	}
	group := id
	if g := spec.Annotations[annSandboxID]; g != "" {
		group = g
	}
	socketDir := opts.GetSocketDir()
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, opts.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	res := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: addr}
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(addr) {
			return res, nil // the pod's shim runs already
		}
		if err := shim.RemoveSocket(addr); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if l, err = shim.NewSocket(addr); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			l.Close()
			_ = shim.RemoveSocket(addr)
		}
	}()
	f, err := l.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.GetContainerdGrpcAddress()}
	if opts.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the shim: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("adjust the shim's OOM score: %w", err)
	}
	// The server has its own copy of the listening socket: close ours
	// without unlinking the path containerd is about to dial.
	l.SetUnlinkOnClose(false)
	l.Close()
	return res, nil
}

// Stop cleans up after a task whose shim is gone (containerd's "delete"
// action, run in the task's bundle): a sandbox's agent is killed if it still
// runs and its directory removed.
func (Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	b, err := os.ReadFile(fileSandboxDir)
	if err == nil {
		dir := strings.TrimSpace(string(b))
		if filepath.IsAbs(dir) {
			if err := sandbox.Cleanup(dir); err != nil {
				return shim.StopStatus{}, err
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return shim.StopStatus{}, err
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(syscall.SIGKILL)}, nil
}

// Info describes the runtime.
func (m Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{Name: RuntimeType, Version: &types.RuntimeVersion{Version: m.Version}}, nil
}

// siblingPath is name in the directory of the binary at self.
func siblingPath(self, name string) string { return filepath.Join(filepath.Dir(self), name) }
