// Command unpack measures cocoon's image unpack (verify + extract every
// layer of a multi-layer OCI layout into the layer store) against
// `umoci unpack` of the same layout in the same run, and prints the ratio;
// then the same image with every layer encrypted (ocicrypt, as `cocoon
// image encrypt` writes it), decrypted on its way into the store, against
// the plain unpack.
// The image is made from this machine's Go toolchain tree (many small source
// files and some large binaries), so it needs nothing from the network.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"cocoon.dev/cocoon/bench/internal/stats"
	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/imagecrypt"
	"cocoon.dev/cocoon/internal/testimage"
)

func main() {
	runs := flag.Int("runs", 3, "runs of each unpacker (the median is reported)")
	work := flag.String("work", "", "working directory (default: a temporary one)")
	flag.Parse()
	if err := run(*runs, *work); err != nil {
		fmt.Fprintln(os.Stderr, "unpack bench:", err)
		os.Exit(1)
	}
}

func run(runs int, work string) error {
	if _, err := exec.LookPath("umoci"); err != nil {
		return fmt.Errorf("umoci is needed (apt-get install umoci)")
	}
	if work == "" {
		d, err := os.MkdirTemp("", "cocoon-unpack-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	layout := filepath.Join(work, "layout")
	total, err := testimage.GoTreeLayout(layout, "bench")
	if err != nil {
		return err
	}

	kek, err := encryptedLayout(layout, "bench", "bench-enc", work)
	if err != nil {
		return err
	}
	var ours, theirs, decrypted []time.Duration
	for i := 0; i < runs; i++ {
		encStore := filepath.Join(work, fmt.Sprintf("encstore%d", i))
		es, err := image.NewLayerStore(encStore)
		if err != nil {
			return err
		}
		dropCaches()
		start := time.Now()
		p := &image.Puller{Store: es, LayerKey: func(_ context.Context, d v1.Descriptor) ([]byte, error) {
			pk, err := imagecrypt.ParsePacket(d.Annotations[imagecrypt.AnnotationProvider])
			if err != nil {
				return nil, err
			}
			return pk.Unwrap(kek)
		}}
		if _, err := p.Pull(context.Background(), "oci:"+layout+":bench-enc", nil); err != nil {
			return err
		}
		decrypted = append(decrypted, time.Since(start))
		os.RemoveAll(encStore)

		store := filepath.Join(work, fmt.Sprintf("store%d", i))
		s, err := image.NewLayerStore(store)
		if err != nil {
			return err
		}
		dropCaches()
		start = time.Now()
		if _, err := (&image.Puller{Store: s}).Pull(context.Background(), "oci:"+layout+":bench", nil); err != nil {
			return err
		}
		ours = append(ours, time.Since(start))
		os.RemoveAll(store)

		bundle := filepath.Join(work, fmt.Sprintf("bundle%d", i))
		dropCaches()
		start = time.Now()
		if out, err := exec.Command("umoci", "unpack", "--image", layout+":bench", bundle).CombinedOutput(); err != nil {
			return fmt.Errorf("umoci unpack: %v: %s", err, out)
		}
		theirs = append(theirs, time.Since(start))
		os.RemoveAll(bundle)
	}
	mo, mt := stats.Median(ours), stats.Median(theirs)
	mib := float64(total) / (1 << 20)
	fmt.Printf("cocoon unpack (verify + extract, layers in parallel): median %v  (%.0f MiB/s)\n", mo.Round(time.Millisecond), mib/mo.Seconds())
	fmt.Printf("umoci unpack:                                       median %v  (%.0f MiB/s)\n", mt.Round(time.Millisecond), mib/mt.Seconds())
	fmt.Printf("ratio: cocoon is %.2fx the speed of umoci (target: >= 1.0)\n", mt.Seconds()/mo.Seconds())
	md := stats.Median(decrypted)
	fmt.Printf("cocoon unpack of the encrypted image (decrypt + verify + extract): median %v  (%.0f MiB/s)\n", md.Round(time.Millisecond), mib/md.Seconds())
	fmt.Printf("ratio: decrypting unpack is %.0f%% of the plain unpack's throughput (target: >= 80%%)\n", 100*mo.Seconds()/md.Seconds())
	return nil
}

// encryptedLayout adds to the layout a copy of image tag with every layer
// encrypted for a fresh broker key (returned), tagged encTag.
func encryptedLayout(dir, tag, encTag, work string) ([]byte, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var src v1.Image
	for _, d := range im.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == tag {
			if src, err = idx.Image(d.Digest); err != nil {
				return nil, err
			}
		}
	}
	if src == nil {
		return nil, fmt.Errorf("no image %q in %s", tag, dir)
	}
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	tmp := filepath.Join(work, "ciphertext")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	enc, err := imagecrypt.EncryptImage(src, imagecrypt.Wrapping{Kid: "kbs:///bench/image/key", KEK: kek}, tmp)
	if err != nil {
		return nil, err
	}
	return kek, lp.AppendImage(enc, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: encTag}))
}

// dropCaches writes back dirty pages so one run's writes do not slow the
// next; the page cache of the (read-only) layout stays warm for both.
func dropCaches() {
	_ = exec.Command("sync").Run()
}
