// Command unpack measures cocoon's image unpack (verify + extract every
// layer of a multi-layer OCI layout into the layer store) against
// `umoci unpack` of the same layout in the same run, and prints the ratio.
// The image is made from this machine's Go toolchain tree (many small source
// files and some large binaries), so it needs nothing from the network.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

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

// dirLayer tars the trees under goroot/dirs into one gzip layer.
func dirLayer(goroot string, dirs ...string) (v1.Layer, int64, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var size int64
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(goroot, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(goroot, p)
			link := ""
			if info.Mode()&fs.ModeSymlink != 0 {
				link, _ = os.Readlink(p)
			}
			h, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			h.Name = "go/" + rel
			h.Uname, h.Gname = "", ""
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if info.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				n, err := io.Copy(tw, f)
				f.Close()
				size += n
				return err
			}
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	return l, size, err
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
	goroot := runtime.GOROOT()
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		goroot = strings.TrimSpace(string(out))
	}
	groups := [][]string{{"pkg/tool"}, {"src/cmd"}, {"src/net", "src/crypto"}, {"src/runtime", "src/internal"}, {"src/syscall", "src/vendor", "src/go"}, {"src/math", "src/encoding", "src/image"}}
	var layers []v1.Layer
	var total int64
	fmt.Fprintf(os.Stderr, "building a %d-layer image from %s ...\n", len(groups), goroot)
	for _, g := range groups {
		l, n, err := dirLayer(goroot, g...)
		if err != nil {
			return err
		}
		layers = append(layers, l)
		total += n
	}
	img, err := testimage.Image(v1.Config{Cmd: []string{"/bin/true"}}, layers...)
	if err != nil {
		return err
	}
	layout := filepath.Join(work, "layout")
	if err := testimage.WriteLayout(layout, map[string]v1.Image{"bench": img}); err != nil {
		return err
	}
	var compressed int64
	for _, l := range layers {
		s, _ := l.Size()
		compressed += s
	}
	fmt.Printf("image: %d layers, %.1f MiB of files, %.1f MiB compressed\n", len(layers), float64(total)/(1<<20), float64(compressed)/(1<<20))

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
	fmt.Printf("cocoon unpack (verify + extract, %d layers in parallel): median %v  (%.0f MiB/s)\n", len(layers), mo.Round(time.Millisecond), mib/mo.Seconds())
	fmt.Printf("umoci unpack:                                       median %v  (%.0f MiB/s)\n", mt.Round(time.Millisecond), mib/mt.Seconds())
	fmt.Printf("ratio: cocoon is %.2fx the speed of umoci (target: >= 1.0)\n", mt.Seconds()/mo.Seconds())
	return nil
}

// dropCaches writes back dirty pages so one run's writes do not slow the
// next; the page cache of the (read-only) layout stays warm for both.
func dropCaches() {
	_ = exec.Command("sync").Run()
}
