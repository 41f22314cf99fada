// Package testimage builds small OCI images from files on this machine
// (busybox-static, static Go programs) and serves them from an in-process
// registry or writes them as OCI layouts, so tests and examples need nothing
// from the internet.
package testimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static installs busybox.
const BusyboxPath = "/bin/busybox"

// Applets linked to busybox in the busybox layer.
var Applets = []string{"sh", "echo", "cat", "ls", "sleep", "true", "false", "env", "id", "hostname",
	"wget", "seq", "touch", "mkdir", "rm", "test", "[", "printf", "kill", "ps", "head", "grep", "date", "pwd", "nc", "wc", "dd"}

// File is one entry of a layer.
type File struct {
	Path     string // absolute path in the image
	Data     []byte
	Mode     int64 // permission bits; 0 means 0644 (0755 for dirs)
	Type     byte  // tar type flag; 0 means a regular file
	Linkname string
}

// Layer builds a gzip-compressed layer from files (in the given order).
func Layer(files []File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	for _, f := range files {
		typ := f.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Typeflag: typ, Mode: mode, Linkname: f.Linkname, ModTime: mt, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// BusyboxLayer is a layer with busybox-static, its applet links, /tmp and
// /etc/passwd.
func BusyboxLayer() (v1.Layer, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("busybox-static is needed (apt-get install busybox-static): %w", err)
	}
	files := []File{
		{Path: "/bin", Type: tar.TypeDir},
		{Path: "/bin/busybox", Data: bb, Mode: 0o755},
		{Path: "/tmp", Type: tar.TypeDir, Mode: 0o1777},
		{Path: "/etc", Type: tar.TypeDir},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\napp:x:1000:\n")},
	}
	for _, a := range Applets {
		files = append(files, File{Path: "/bin/" + a, Type: tar.TypeSymlink, Linkname: "busybox"})
	}
	return Layer(files)
}

// Image builds an image from layers with the given config.
func Image(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch()
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// Busybox is a busybox image whose default command is sh, plus extra layers.
func Busybox(extra ...v1.Layer) (v1.Image, error) {
	l, err := BusyboxLayer()
	if err != nil {
		return nil, err
	}
	return Image(v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin", "IMAGE_VAR=from-image"}}, append([]v1.Layer{l}, extra...)...)
}

// GoBinary builds a static Go program (a package path of this module, or a
// directory) and returns its bytes.
func GoBinary(pkg string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "testimage-go")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "bin")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %v: %s", pkg, err, b)
	}
	return os.ReadFile(out)
}

// Registry is an in-process OCI registry on loopback. Tamper makes it serve
// a blob with one byte changed, as a compromised registry or network would.
type Registry struct {
	srv      *httptest.Server
	mu       sync.Mutex
	tampered map[string]bool
}

// NewRegistry starts a registry on 127.0.0.1 that serves the OCI
// referrers API (as cosign v3 stores signatures).
func NewRegistry() *Registry { return newRegistry(true) }

// NewRegistryWithoutReferrers starts a registry of before the referrers
// API: clients keep referrers under the sha256-<hex> tag instead.
func NewRegistryWithoutReferrers() *Registry { return newRegistry(false) }

func newRegistry(referrers bool) *Registry {
	r := &Registry{tampered: map[string]bool{}}
	inner := registry.New(registry.Logger(nilLogger()), registry.WithReferrersSupport(referrers))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		i := strings.LastIndex(req.URL.Path, "/blobs/")
		r.mu.Lock()
		bad := i >= 0 && req.Method == http.MethodGet && r.tampered[req.URL.Path[i+len("/blobs/"):]]
		r.mu.Unlock()
		if !bad {
			inner.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	return r
}

// Tamper makes the registry corrupt the blob with this digest.
func (r *Registry) Tamper(digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tampered[digest] = true
}

// Host is host:port of the registry.
func (r *Registry) Host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

// Push uploads img as repo:tag and returns the reference with its digest.
func (r *Registry) Push(repo string, img v1.Image) (tagged, pinned string, err error) {
	ref, err := name.ParseReference(r.Host() + "/" + repo)
	if err != nil {
		return "", "", err
	}
	if err := remote.Write(ref, img); err != nil {
		return "", "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", "", err
	}
	return ref.String(), ref.Context().String() + "@" + d.String(), nil
}

// WriteLayout writes images into an OCI layout at dir, each tagged (the
// org.opencontainers.image.ref.name annotation) with its key.
func WriteLayout(dir string, imgs map[string]v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	tags := make([]string, 0, len(imgs))
	for t := range imgs {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	for _, t := range tags {
		if err := p.AppendImage(imgs[t], layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": t})); err != nil {
			return err
		}
	}
	return nil
}
