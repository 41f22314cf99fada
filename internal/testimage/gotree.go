package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// dirLayer tars the trees under root/dirs into one gzip layer and returns
// it with the bytes of file content it holds.
func dirLayer(root string, dirs ...string) (v1.Layer, int64, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var size int64
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
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

// GoTreeLayout writes a 6-layer image made of this machine's Go toolchain
// tree (many small sources, some large binaries: a realistic mix) into an
// OCI layout, and returns the bytes of file content. Benchmarks use it.
func GoTreeLayout(dir, tag string) (int64, error) {
	layers, total, err := GoTreeLayers()
	if err != nil {
		return 0, err
	}
	img, err := Image(v1.Config{Cmd: []string{"/bin/true"}}, layers...)
	if err != nil {
		return 0, err
	}
	if err := WriteLayout(dir, map[string]v1.Image{tag: img}); err != nil {
		return 0, err
	}
	return total, nil
}

// GoTreeLayers are the layers of GoTreeLayout's image and the bytes of
// files they hold.
func GoTreeLayers() ([]v1.Layer, int64, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, 0, fmt.Errorf("go env GOROOT: %w", err)
	}
	goroot := strings.TrimSpace(string(out))
	groups := [][]string{{"pkg/tool"}, {"src/cmd"}, {"src/net", "src/crypto"}, {"src/runtime", "src/internal"}, {"src/syscall", "src/vendor", "src/go"}, {"src/math", "src/encoding", "src/image"}}
	fmt.Fprintf(os.Stderr, "building a %d-layer image from %s ...\n", len(groups), goroot)
	var layers []v1.Layer
	var total, compressed int64
	for _, g := range groups {
		l, n, err := dirLayer(goroot, g...)
		if err != nil {
			return nil, 0, err
		}
		s, _ := l.Size()
		layers = append(layers, l)
		total += n
		compressed += s
	}
	fmt.Printf("image: %d layers, %.1f MiB of files, %.1f MiB compressed\n", len(layers), float64(total)/(1<<20), float64(compressed)/(1<<20))
	return layers, total, nil
}
