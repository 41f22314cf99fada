package agent

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/volume"
)

// openEncrypted opens an encrypted volume inside the sandbox: the key comes
// from the pod's key broker (after attestation), the image — a path or an
// http(s) URL read with range requests — is decrypted by dm-crypt where the
// kernel has it (paths only), else by the userspace path (FUSE file + loop
// device), and its filesystem mounted in the agent's private mount
// namespace, at the directory returned.
func (a *Agent) openEncrypted(ctx context.Context, v *agentv1.EncryptedVolume) (string, error) {
	ks, err := volume.ParseKeyURI(v.GetKeyUri())
	if err != nil {
		return "", fmt.Errorf("volume %q: %w: %w", v.GetName(), err, errInvalid)
	}
	repo, typ, tag, err := protocol.ParseURI(ks.Resource)
	if err != nil {
		return "", fmt.Errorf("volume %q: %w: %w", v.GetName(), err, errInvalid)
	}
	res, err := a.resource(ctx, repo, typ, tag)
	if err != nil {
		return "", fmt.Errorf("volume %q: key: %w", v.GetName(), err)
	}
	key, err := ks.Passphrase(res)
	clear(res)
	if err != nil {
		return "", fmt.Errorf("volume %q: key: %w", v.GetName(), err)
	}
	defer clear(key)
	target := filepath.Join(a.cfg.StateDir, "volumes", v.GetName())
	src := v.GetSource()
	if a.cfg.VolumeSource != nil && strings.HasPrefix(src, "/") {
		if src, err = a.cfg.VolumeSource(src); err != nil {
			return "", fmt.Errorf("volume %q: %w", v.GetName(), err)
		}
	}
	var u volume.Closer
	var dev *volume.Device
	switch {
	case volume.IsURL(src):
		// Read with range requests through the sandbox's way out; only
		// the userspace path decrypts what is not a block device.
		dev, _, err = volume.OpenURL(ctx, src, &http.Client{Transport: a.cfg.Transport}, key)
	case volume.HasDMCrypt():
		// The kernel decrypts: the LUKS2 header unlocked here, the
		// crypt table loaded with the key.
		u, err = volume.OpenKernel(src, key, v.GetReadOnly(), "cocoon-"+filepath.Base(a.cfg.StateDir)+"-"+v.GetName(), target)
	default:
		dev, _, err = volume.Open(src, key, v.GetReadOnly())
	}
	if err != nil {
		return "", fmt.Errorf("volume %q: %w", v.GetName(), err)
	}
	if dev != nil {
		base := filepath.Join(a.cfg.StateDir, "encvol", v.GetName())
		if u, err = volume.OpenUserspace(dev, filepath.Join(base, "fuse"), target); err != nil {
			dev.Close()
			return "", fmt.Errorf("volume %q: %w", v.GetName(), err)
		}
	}
	a.mu.Lock()
	a.encrypted = append(a.encrypted, u)
	a.mu.Unlock()
	a.log.Info("encrypted volume opened", "volume", v.GetName(), "read_only", v.GetReadOnly())
	return target, nil
}

// closeEncrypted unmounts every encrypted volume and forgets their keys.
func (a *Agent) closeEncrypted() {
	a.mu.Lock()
	us := a.encrypted
	a.encrypted = nil
	a.mu.Unlock()
	for _, u := range us {
		if err := u.Close(); err != nil {
			a.log.Warn("close encrypted volume", "error", err)
		}
	}
}
