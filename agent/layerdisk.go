package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/internal/dm"
	"cocoon.dev/cocoon/policy"
)

// layerDisks opens the verified read-only layer disks the host attached
// to a VM: each through dm-verity against the root hash the policy pins
// for the layer, mounted read-only (squashfs) once per sandbox and shared
// by every container whose image has the layer.
type layerDisks struct {
	mu      sync.Mutex
	mounted map[string]string // diff_id → mount point
}

// layerSource is the puller's LayerSource for the image ref: a layer the
// policy pins a disk for, whose disk the host attached, comes from it;
// any other is fetched. A disk that does not open against the pinned root
// hash is an error (nothing of it is used); a block changed later reads
// as an I/O error in the container, never as other data.
func (a *Agent) layerSource(ref string) func(context.Context, string) (string, bool, error) {
	if a.cfg.LayerDisks == nil {
		return nil
	}
	e, ok := a.cfg.Enforcer.(*policy.Engine)
	if !ok || e.Loaded() == nil {
		return nil
	}
	img, ok := e.Loaded().Policy.Images[ref]
	if !ok || len(img.LayerDisks) != len(img.Layers) || len(img.LayerDisks) == 0 {
		return nil
	}
	pins := map[string]policy.LayerDisk{}
	for i, d := range img.Layers {
		pins[d] = img.LayerDisks[i]
	}
	return func(ctx context.Context, diffID string) (string, bool, error) {
		pin, ok := pins[diffID]
		if !ok {
			return "", false, nil
		}
		dev, ok := a.cfg.LayerDisks(guestinit.LayerDiskSerial(diffID))
		if !ok {
			return "", false, nil // not attached: pull it
		}
		return a.disks.open(diffID, dev, pin)
	}
}

func (d *layerDisks) open(diffID, dev string, pin policy.LayerDisk) (string, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dir, ok := d.mounted[diffID]; ok {
		return dir, true, nil
	}
	hexID := strings.TrimPrefix(diffID, "sha256:")
	if len(hexID) != 64 {
		return "", false, fmt.Errorf("layer disk: %q is not a sha256 diff_id", diffID)
	}
	v := guestinit.LayerDiskVerity(diffID, pin.RootHash, pin.DataBlocks)
	name := "cocoon-layer-" + hexID[:16]
	mapped, err := dm.Create(name, []dm.Target{{
		Length: uint64(pin.DataBlocks) * guestinit.VerityBlock / 512, Type: "verity", Params: v.Params(dev),
	}}, true)
	if err != nil {
		return "", false, fmt.Errorf("layer disk of %s: dm-verity: %w", diffID, err)
	}
	dir := filepath.Join(GuestLayerDiskDir, hexID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		_ = dm.Remove(name)
		return "", false, err
	}
	if err := unix.Mount(mapped, dir, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		_ = dm.Remove(name)
		return "", false, fmt.Errorf("layer disk of %s does not open against the policy's root hash %s (the host's disk was altered, or built for another policy): %w", diffID, pin.RootHash, err)
	}
	if d.mounted == nil {
		d.mounted = map[string]string{}
	}
	d.mounted[diffID] = dir
	return dir, true, nil
}
