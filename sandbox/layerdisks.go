package sandbox

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/layerdisk"
	"cocoon.dev/cocoon/policy"
)

// AnnotationLayerDisks set to "false" makes a VM sandbox pull every image
// in the guest rather than take layers from verified disks the node
// builds.
const AnnotationLayerDisks = "cocoon.dev/layer-disks"

// MaxLayerDisks bounds the disks one VM gets (each is a PCI device);
// images past it are pulled in the guest.
const MaxLayerDisks = 24

// LayerDisks returns the root's shared cache of layer disks.
func (r Root) LayerDisks() layerdisk.Cache {
	return layerdisk.Cache{Dir: filepath.Join(string(r), "layerdisks")}
}

// layerDiskDrives builds (or finds in the node's cache) the disks of the
// layers the pod's policy pins disks for, and returns them as read-only
// drives. The host is trusted for nothing here: the guest opens each disk
// only against the root hash the policy pins, so a wrong disk is refused
// there. An image the host cannot read (or whose digest is not the
// pinned one) simply gets no disks: the guest pulls it.
func (s *shim) layerDiskDrives(ctx context.Context) ([]Drive, error) {
	if s.pod.Annotations[AnnotationLayerDisks] == "false" {
		return nil, nil
	}
	text, err := PolicyText(s.pod)
	if err != nil || text == nil {
		return nil, err
	}
	pol, err := policy.Parse(text)
	if err != nil {
		return nil, err
	}
	cache := s.root.LayerDisks()
	var drives []Drive
	seen := map[string]bool{}
	for _, ref := range s.pod.Images() {
		pin, ok := pol.Images[ref]
		if !ok || len(pin.LayerDisks) == 0 || len(pin.LayerDisks) != len(pin.Layers) || pin.Digest == "" {
			continue
		}
		if len(drives)+len(pin.Layers) > MaxLayerDisks {
			s.log.Info("layer disks: too many layers, pulled in the guest", "image", ref)
			continue
		}
		in, err := image.Inspect(ctx, ref, nil)
		if err != nil || in.ManifestDigest != pin.Digest || len(in.DiffIDs) != len(pin.Layers) {
			s.log.Info("layer disks: image not readable here as pinned, pulled in the guest", "image", ref, "error", err)
			continue
		}
		for i, d := range in.DiffIDs {
			if seen[d] {
				continue
			}
			path, _, err := cache.Get(d, func() (io.ReadCloser, error) { return in.OpenUncompressed(i) })
			if err != nil {
				return nil, fmt.Errorf("layer disk of %s (%s): %w", ref, d, err)
			}
			seen[d] = true
			drives = append(drives, Drive{Path: path, Serial: guestinit.LayerDiskSerial(d), ReadOnly: true})
		}
	}
	return drives, nil
}
