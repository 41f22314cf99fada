package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/spans"
	"cocoon.dev/cocoon/sealed"
)

// MaxSealedVolumeBytes bounds the released values of one sealed volume
// (what Kubernetes allows one Secret).
const MaxSealedVolumeBytes = 1 << 20

// openSealed makes a sealed secret volume: a memory-backed file system
// holding, for each file, the resource its sealed reference names, fetched
// through the sandbox's attested KBS session; then remounted read-only. The
// references were pinned by the policy (create_sandbox); the values exist
// only inside the sandbox. Nothing is left mounted when one file fails,
// and no error repeats a value.
func (a *Agent) openSealed(ctx context.Context, v *agentv1.SealedVolume) (dir string, err error) {
	defer spans.Start(ctx, "sealed secret volume "+v.GetName()+" written (released by the key broker)")()
	if len(v.GetFiles()) > 64 {
		return "", fmt.Errorf("volume %q: %d files, more than 64: %w", v.GetName(), len(v.GetFiles()), errInvalid)
	}
	dir = filepath.Join(a.cfg.StateDir, "volumes", v.GetName())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("volume %q: %w", v.GetName(), err)
	}
	// Room for the values and a page of overhead per file.
	size := MaxSealedVolumeBytes + (len(v.GetFiles())+1)*4096
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return "", fmt.Errorf("volume %q: mount tmpfs: %w", v.GetName(), err)
	}
	defer func() {
		if err != nil {
			_ = unix.Unmount(dir, unix.MNT_DETACH)
			_ = os.Remove(dir)
		}
	}()
	total := 0
	for _, f := range v.GetFiles() {
		at := fmt.Sprintf("volume %q: file %q", v.GetName(), f.GetPath())
		if err := sealed.CheckPath(f.GetPath()); err != nil {
			return "", fmt.Errorf("volume %q: %w: %w", v.GetName(), err, errInvalid)
		}
		if f.GetMode()&^0o777 != 0 {
			return "", fmt.Errorf("%s: mode %#o is not a permission mode: %w", at, f.GetMode(), errInvalid)
		}
		s, err := sealed.Parse(f.GetValue())
		if err != nil {
			return "", fmt.Errorf("%s: %w: %w", at, err, errInvalid)
		}
		repo, typ, tag := s.Resource()
		val, err := a.resource(ctx, repo, typ, tag)
		if err != nil {
			return "", fmt.Errorf("%s: the sealed secret %s was not released: %w: %w", at, s.Name, err, errState)
		}
		total += len(val)
		if total > MaxSealedVolumeBytes {
			clear(val)
			return "", fmt.Errorf("volume %q: the released values exceed %d bytes: %w", v.GetName(), MaxSealedVolumeBytes, errInvalid)
		}
		err = writeSealedFile(dir, f.GetPath(), val, f.GetMode())
		clear(val)
		if err != nil {
			return "", fmt.Errorf("%s: %w", at, err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return "", fmt.Errorf("volume %q: remount read-only: %w", v.GetName(), err)
	}
	return dir, nil
}

// writeSealedFile creates path (and its parent directories) under dir,
// refusing to follow anything that is already there.
func writeSealedFile(dir, path string, val []byte, mode uint32) error {
	if mode == 0 {
		mode = 0o644
	}
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		if err := os.MkdirAll(filepath.Join(dir, path[:i]), 0o755); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, path), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, os.FileMode(mode))
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("declared twice: %w", errInvalid)
		}
		return err
	}
	if _, err := f.Write(val); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(os.FileMode(mode)); err != nil { // past the umask
		f.Close()
		return err
	}
	return f.Close()
}
