package policygen

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"cocoon.dev/cocoon/layerdisk"
)

// TestLayerDisks: the generator pins each layer's disk, and a node that
// builds the disk from the same layer (layerdisk.Cache, as the runtime
// will) gets the same root hash and size; a second generation takes them
// from the cache.
func TestLayerDisks(t *testing.T) {
	p, dir := fixture(t, 1)
	cache := t.TempDir()
	pol, err := Generate(context.Background(), p, GenerateOptions{LayerDisks: true, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	var img struct {
		layers []string
		disks  int
	}
	for _, im := range pol.Images {
		img.layers, img.disks = im.Layers, len(im.LayerDisks)
		if img.disks != len(im.Layers) || img.disks == 0 {
			t.Fatalf("%d disks for %d layers", img.disks, len(im.Layers))
		}
		lp, err := layout.FromPath(filepath.Join(dir, "layout"))
		if err != nil {
			t.Fatal(err)
		}
		idx, _ := lp.ImageIndex()
		im2, _ := idx.IndexManifest()
		oci, err := idx.Image(im2.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		ls, _ := oci.Layers()
		for i, l := range ls {
			node := layerdisk.Cache{Dir: t.TempDir()}
			_, info, err := node.Get(im.Layers[i], l.Uncompressed)
			if err != nil {
				t.Fatal(err)
			}
			if info.Verity.RootHash != im.LayerDisks[i].RootHash || info.Verity.DataBlocks != im.LayerDisks[i].DataBlocks {
				t.Fatalf("layer %d: the node's disk %+v, the policy pins %+v", i, info.Verity, im.LayerDisks[i])
			}
		}
	}
	// Again, from the cache: the same pins.
	again, err := Generate(context.Background(), p, GenerateOptions{LayerDisks: true, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	for ref, im := range again.Images {
		if len(im.LayerDisks) != img.disks || im.LayerDisks[0] != pol.Images[ref].LayerDisks[0] {
			t.Fatalf("cached generation: %+v", im.LayerDisks)
		}
	}
	// Without the option: none.
	plain, err := Generate(context.Background(), p, GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range plain.Images {
		if len(im.LayerDisks) != 0 {
			t.Fatalf("disks without the option: %+v", im.LayerDisks)
		}
	}
}
