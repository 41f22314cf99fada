package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/layerdisk"
	"cocoon.dev/cocoon/policy"
)

// AnnotationLayerDisks set to "false" makes a VM sandbox pull every image
// in the guest rather than take layers from verified disks the node
// builds.
const AnnotationLayerDisks = "cocoon.dev/layer-disks"

// errNotAsPinned: the host cannot read the image as the policy pins it.
var errNotAsPinned = errors.New("the image is not readable here as its policy pins it")

// dirLayerDisks, in a sandbox's directory, holds its links to the node's
// layer disks.
const dirLayerDisks = "layerdisks"

// MaxLayerDisks bounds the disks one VM gets (each is a PCI device);
// images past it are pulled in the guest.
const MaxLayerDisks = 24

// LayerDisks returns the root's shared cache of layer disks.
func (r Root) LayerDisks() layerdisk.Cache {
	return layerdisk.Cache{Dir: filepath.Join(string(r), "layerdisks")}
}

// diskImages are the images whose layers a VM gets as disks: the pod's,
// or — under the CRI, where the sandbox starts before any container is
// named — every image its policy pins, in a fixed order. The policy is
// generated from the pod's spec, so those are the pod's images.
func diskImages(podImages []string, pol *policy.Policy) []string {
	if len(podImages) > 0 {
		return podImages
	}
	return slices.Sorted(maps.Keys(pol.Images))
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
	links := filepath.Join(s.dir, dirLayerDisks)
	if err := os.MkdirAll(links, 0o700); err != nil {
		return nil, err
	}
	var drives []Drive
	seen := map[string]bool{}
	start, built := time.Now(), 0
	defer func() {
		if len(drives) > 0 {
			s.timing("layer_disks_s")
			s.log.Info("layer disks ready", "disks", len(drives), "built", built, "took", time.Since(start))
		}
	}()
	for _, ref := range diskImages(s.pod.Images(), pol) {
		pin, ok := pol.Images[ref]
		if !ok || len(pin.LayerDisks) == 0 || len(pin.LayerDisks) != len(pin.Layers) || pin.Digest == "" {
			continue
		}
		if len(drives)+len(pin.Layers) > MaxLayerDisks {
			s.log.Info("layer disks: too many layers, pulled in the guest", "image", ref)
			continue
		}
		// The policy names the layers: a node whose cache holds their
		// disks reads nothing of the image. Only a disk to build needs the
		// image, inspected once.
		var in *image.Inspection
		open := func(i int) func() (io.ReadCloser, error) {
			return func() (io.ReadCloser, error) {
				if in == nil {
					got, err := image.Inspect(ctx, ref, nil)
					if err != nil || got.ManifestDigest != pin.Digest || !slices.Equal(got.DiffIDs, pin.Layers) {
						return nil, fmt.Errorf("%w (%v)", errNotAsPinned, err)
					}
					in = got
				}
				r, err := in.OpenUncompressed(i)
				if err == nil {
					built++
				}
				return r, err
			}
		}
		var onDisk []int
		for i, d := range pin.Layers {
			if seen[d] {
				onDisk = append(onDisk, i)
				continue
			}
			// The sandbox's own link to the disk: the cache's pruning
			// sees it held, and it lives as long as the sandbox.
			path := filepath.Join(links, strings.TrimPrefix(d, "sha256:")+".disk")
			info, err := cache.Use(d, open(i), path)
			if errors.Is(err, errNotAsPinned) {
				s.log.Info("layer disks: image not readable here as pinned, pulled in the guest", "image", ref, "error", err)
				break
			}
			if err != nil {
				return nil, fmt.Errorf("layer disk of %s (%s): %w", ref, d, err)
			}
			if info.Verity.RootHash != pin.LayerDisks[i].RootHash || info.Verity.DataBlocks != pin.LayerDisks[i].DataBlocks {
				// Built by another format (or altered): the guest would
				// refuse it; this layer is pulled instead.
				s.log.Info("layer disks: the cached disk is not the one the policy pins, pulled in the guest", "layer", d)
				_ = os.Remove(path)
				continue
			}
			seen[d] = true
			onDisk = append(onDisk, i)
			drives = append(drives, Drive{Path: path, Serial: guestinit.LayerDiskSerial(d), ReadOnly: true})
		}
		for _, b := range layoutBlobs(ctx, ref, pin, in, onDisk) {
			s.diskBlobs[b] = true
		}
	}
	return drives, nil
}

// layoutBlobs are the files of an OCI layout on the host that hold the
// image's layers at idx, which the guest takes from disks: the channel
// that copies the layout into the guest leaves them out, so the guest
// holds only the manifest, config and the layers it pulls. (Nothing
// depends on it for safety: a blob the guest needed and lacks fails its
// pull.) in is the image when it was inspected already.
func layoutBlobs(ctx context.Context, ref string, pin policy.Image, in *image.Inspection, idx []int) []string {
	r, err := image.ParseRef(ref)
	if err != nil || r.Transport != image.OCILayout || len(idx) == 0 {
		return nil
	}
	if in == nil {
		got, err := image.Inspect(ctx, ref, nil)
		if err != nil || got.ManifestDigest != pin.Digest || !slices.Equal(got.DiffIDs, pin.Layers) {
			return nil
		}
		in = got
	}
	layers := in.Layers()
	var out []string
	for _, i := range idx {
		if i >= len(layers) {
			continue
		}
		if alg, hex, ok := strings.Cut(layers[i].Digest.String(), ":"); ok {
			out = append(out, filepath.Join(filepath.Clean(r.Path), "blobs", alg, hex))
		}
	}
	return out
}
