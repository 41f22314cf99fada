// Command unpack measures cocoon's image unpack (verify + extract every
// layer of a multi-layer OCI layout into the layer store) against
// `umoci unpack` of the same layout in the same run, and prints the ratio.
// The image is made from this machine's Go toolchain tree (many small source
// files and some large binaries), so it needs nothing from the network.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"cocoon.dev/cocoon/image"
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

func median(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
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

	var ours, theirs []time.Duration
	for i := 0; i < runs; i++ {
		store := filepath.Join(work, fmt.Sprintf("store%d", i))
		s, err := image.NewLayerStore(store)
		if err != nil {
			return err
		}
		dropCaches()
		start := time.Now()
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
	mo, mt := median(ours), median(theirs)
	mib := float64(total) / (1 << 20)
	fmt.Printf("cocoon unpack (verify + extract, layers in parallel): median %v  (%.0f MiB/s)\n", mo.Round(time.Millisecond), mib/mo.Seconds())
	fmt.Printf("umoci unpack:                                       median %v  (%.0f MiB/s)\n", mt.Round(time.Millisecond), mib/mt.Seconds())
	fmt.Printf("ratio: cocoon is %.2fx the speed of umoci (target: >= 1.0)\n", mt.Seconds()/mo.Seconds())
	return nil
}

// dropCaches writes back dirty pages so one run's writes do not slow the
// next; the page cache of the (read-only) layout stays warm for both.
func dropCaches() {
	_ = exec.Command("sync").Run()
}
