// Command policygen measures `cocoon policy generate` on a local multi-layer
// image (OCI layout; no cache, so every layer is fetched and verified)
// against the time to just gunzip and sha256 its layers one after another in
// the same run, and prints the ratio (target: at most 1.3x).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/klauspost/compress/gzip"

	"cocoon.dev/cocoon/bench/internal/stats"
	"cocoon.dev/cocoon/internal/testimage"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/policygen"
)

func main() {
	runs := flag.Int("runs", 3, "runs of each (the median is reported)")
	flag.Parse()
	if err := run(*runs); err != nil {
		fmt.Fprintln(os.Stderr, "policygen bench:", err)
		os.Exit(1)
	}
}

// gunzipSHA is the reference: read each layer blob, gunzip it, sha256 it.
func gunzipSHA(dir string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return err
	}
	im, _ := idx.IndexManifest()
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	for _, l := range m.Layers {
		f, err := os.Open(filepath.Join(dir, "blobs", l.Digest.Algorithm, l.Digest.Hex))
		if err != nil {
			return err
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			f.Close()
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, zr)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func run(runs int) error {
	work, err := os.MkdirTemp("", "cocoon-policygen-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "layout")
	if _, err := testimage.GoTreeLayout(dir, "bench"); err != nil {
		return err
	}
	y := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: bench}\nspec:\n  containers:\n  - {name: app, image: \"oci:%s:bench\"}\n", dir)
	p, err := pod.Parse([]byte(y))
	if err != nil {
		return err
	}
	var gen, disks, ref []time.Duration
	for i := 0; i < runs; i++ {
		// With the layer disks (cocoon policy generate's default): each
		// layer's squashfs image and verity tree built as it is verified.
		start := time.Now()
		if _, err := policygen.Generate(context.Background(), p, policygen.GenerateOptions{LayerDisks: true}); err != nil {
			return err
		}
		disks = append(disks, time.Since(start))
		start = time.Now()
		pol, err := policygen.Generate(context.Background(), p, policygen.GenerateOptions{})
		if err != nil {
			return err
		}
		if _, err := policy.Render(pol); err != nil {
			return err
		}
		gen = append(gen, time.Since(start))
		start = time.Now()
		if err := gunzipSHA(dir); err != nil {
			return err
		}
		ref = append(ref, time.Since(start))
	}
	// A second generation with the cache is instant.
	cache := filepath.Join(work, "cache")
	if _, err := policygen.Generate(context.Background(), p, policygen.GenerateOptions{CacheDir: cache}); err != nil {
		return err
	}
	start := time.Now()
	if _, err := policygen.Generate(context.Background(), p, policygen.GenerateOptions{CacheDir: cache}); err != nil {
		return err
	}
	cached := time.Since(start)
	mg, mr := stats.Median(gen), stats.Median(ref)
	fmt.Printf("cocoon policy generation (verify every layer, parallel): median %v\n", mg.Round(time.Millisecond))
	fmt.Printf("gunzip + sha256 of the layers, one after another:     median %v\n", mr.Round(time.Millisecond))
	fmt.Printf("ratio: %.2fx (target: at most 1.3x); generation again with the cache: %v\n", mg.Seconds()/mr.Seconds(), cached.Round(time.Millisecond))
	md := stats.Median(disks)
	fmt.Printf("with layer disks pinned (--layer-disks, the CLI's default): median %v, %.2fx the reference\n", md.Round(time.Millisecond), md.Seconds()/mr.Seconds())
	return nil
}
