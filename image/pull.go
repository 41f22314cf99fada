package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"cocoon.dev/cocoon/imagecrypt"
)

// Image is a pulled, verified, unpacked image.
type Image struct {
	Ref Ref
	// RepoDigest is the digest of what the reference names (an index or a
	// manifest); ManifestDigest is the platform image manifest's digest.
	RepoDigest     string
	ManifestDigest string
	ConfigDigest   string
	Config         v1.ConfigFile
	DiffIDs        []string
	// LayerDirs are the unpacked layers, lowest first.
	LayerDirs    []string
	CachedLayers int
	// Signer is who signed the image, as the check that verified it says
	// ("" when no check looked for a signature).
	Signer string
	// DiskLayers counts the layers taken from the LayerSource (verified
	// disks) rather than fetched.
	DiskLayers int
}

// Check looks at an image before any of its layers is fetched (its
// manifest and config are verified against each other): it returns who
// vouches for it ("" for nobody in particular), or an error that stops
// the pull.
type Check func(ctx context.Context, in *Inspection) (signer string, err error)

// Progress is updated by Pull as it goes; read it with Snapshot.
type Progress struct {
	layersTotal, layersDone atomic.Int32
	bytesTotal, bytesDone   atomic.Int64
	done                    atomic.Bool
	mu                      sync.Mutex
	err                     error
}

// ProgressSnapshot is a consistent read of a Progress.
type ProgressSnapshot struct {
	LayersTotal, LayersDone int
	BytesTotal, BytesDone   int64
	Done                    bool
	Err                     error
}

// Snapshot reads the progress.
func (p *Progress) Snapshot() ProgressSnapshot {
	p.mu.Lock()
	err := p.err
	p.mu.Unlock()
	return ProgressSnapshot{
		LayersTotal: int(p.layersTotal.Load()), LayersDone: int(p.layersDone.Load()),
		BytesTotal: p.bytesTotal.Load(), BytesDone: p.bytesDone.Load(),
		Done: p.done.Load(), Err: err,
	}
}

func (p *Progress) finish(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
	p.done.Store(true)
}

// Puller fetches images from registries (over Transport), OCI layouts and
// docker archives, verifies every digest and unpacks layers into Store.
type Puller struct {
	Store *LayerStore
	// Transport carries registry traffic; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Parallel is how many layers are fetched at once (default 4).
	Parallel int
	// MaxLayerBytes bounds a layer's uncompressed size (0:
	// DefaultMaxLayerBytes).
	MaxLayerBytes int64
	// LayerSize, when set, gives a layer's uncompressed size as the policy
	// pins it (ok false: not pinned); the layer is then cut off as soon as
	// it grows past that size.
	LayerSize func(diffID string) (size int64, ok bool)
	// LayerKey, when set, unwraps an encrypted layer's key (ocicrypt's
	// private options) from its descriptor's annotations; an image with
	// encrypted layers is refused without it. It is asked for every
	// encrypted layer, cached ones included: the key's release is what
	// authorises the image.
	LayerKey func(ctx context.Context, desc v1.Descriptor) ([]byte, error)
	// LayerSource, when set, may give a layer already in place — a
	// verified read-only disk the host attached, mounted — instead of
	// fetching it (ok false: fetch it). It is asked for layers the store
	// lacks; it must verify what it returns.
	LayerSource func(ctx context.Context, diffID string) (dir string, ok bool, err error)
}

// layerLimit is the bound of one layer's uncompressed size.
func (p *Puller) layerLimit(diffID string) int64 {
	if p.LayerSize != nil {
		if n, ok := p.LayerSize(diffID); ok {
			return n
		}
	}
	if p.MaxLayerBytes > 0 {
		return p.MaxLayerBytes
	}
	return DefaultMaxLayerBytes
}

// Pull fetches and verifies the image named by raw: the manifest against a
// pinned digest, the config against the manifest, each compressed layer
// against the manifest and each uncompressed layer against the config's
// diff_ids. Layers already in the store are not fetched again. On any
// mismatch it returns an error naming the layer and stores nothing of it.
// A check, when given, runs before any layer is fetched.
func (p *Puller) Pull(ctx context.Context, raw string, prog *Progress, check ...Check) (img *Image, err error) {
	if prog == nil {
		prog = &Progress{}
	}
	defer func() { prog.finish(err) }()
	in, err := Inspect(ctx, raw, p.Transport)
	if err != nil {
		return nil, err
	}
	res, cfg, what := in.res, &in.Config, "image "+raw
	n := len(in.DiffIDs)
	img = &Image{
		Ref: in.Ref, RepoDigest: in.RepoDigest, ManifestDigest: in.ManifestDigest,
		ConfigDigest: in.ConfigDigest, Config: *cfg,
		DiffIDs: in.DiffIDs, LayerDirs: make([]string, n),
	}
	for _, c := range check {
		who, err := c(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if who != "" {
			img.Signer = who
		}
	}
	keys, err := p.layerKeys(ctx, res, what)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, k := range keys {
			clear(k)
		}
	}()
	var todo []int
	for i, d := range in.DiffIDs {
		img.LayerDirs[i] = p.Store.Path(d)
		if p.Store.Has(d) {
			img.CachedLayers++
			continue
		}
		if p.LayerSource != nil && keys[i] == nil {
			dir, ok, err := p.LayerSource(ctx, d)
			if err != nil {
				return nil, fmt.Errorf("%s: layer %d/%d (%s): %w", what, i+1, n, d, err)
			}
			if ok {
				img.LayerDirs[i] = dir
				img.DiskLayers++
				continue
			}
		}
		todo = append(todo, i)
		prog.bytesTotal.Add(res.manifest.Layers[i].Size)
	}
	prog.layersTotal.Store(int32(n))
	prog.layersDone.Store(int32(img.CachedLayers + img.DiskLayers))

	par := p.Parallel
	if par <= 0 {
		par = 4
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(par)
	for _, i := range todo {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			if err := p.fetchLayer(gctx, res, img, i, keys[i], prog); err != nil {
				return fmt.Errorf("%s: layer %d/%d (%s): %w", what, i+1, n, layerName(res, img, i), err)
			}
			prog.layersDone.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", what, ctx.Err())
		}
		return nil, err
	}
	return img, nil
}

func layerName(res *resolved, img *Image, i int) string {
	if res.uncompressed {
		return img.DiffIDs[i]
	}
	return res.manifest.Layers[i].Digest.String()
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// layerKeys unwraps the key of every encrypted layer (nil for the others).
func (p *Puller) layerKeys(ctx context.Context, res *resolved, what string) ([][]byte, error) {
	if res.uncompressed {
		return make([][]byte, len(res.manifest.Layers)), nil
	}
	keys := make([][]byte, len(res.manifest.Layers))
	for i, d := range res.manifest.Layers {
		if !imagecrypt.Encrypted(d) {
			continue
		}
		if p.LayerKey == nil {
			return nil, fmt.Errorf("%s: layer %d/%d (%s) is encrypted, and nothing here can unwrap its key: %w", what, i+1, len(keys), d.Digest, imagecrypt.ErrNoKey)
		}
		k, err := p.LayerKey(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %d/%d (%s): %w", what, i+1, len(keys), d.Digest, err)
		}
		keys[i] = k
	}
	return keys, nil
}

func (p *Puller) fetchLayer(ctx context.Context, res *resolved, img *Image, i int, key []byte, prog *Progress) error {
	rc, err := res.layer(i)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer rc.Close()
	diffID := img.DiffIDs[i]
	limit := p.layerLimit(diffID)
	if res.uncompressed {
		_, err := p.Store.Put(diffID, ctxReader{ctx, rc}, nil, limit)
		return err
	}
	desc := res.manifest.Layers[i]
	hr := &hashingReader{r: io.LimitReader(rc, desc.Size+1), h: sha256.New(), tick: func(n int64) { prog.bytesDone.Add(n) }}
	var in io.Reader = ctxReader{ctx, hr}
	if key != nil {
		// Decrypted here, in memory, on its way to the store: what
		// reaches the store was verified against the config's diff_id.
		if in, err = imagecrypt.Decrypt(in, key, desc); err != nil {
			return err
		}
	}
	br := bufio.NewReaderSize(in, 1<<20)
	ur, closeZ, err := decompress(br)
	if err != nil {
		return err
	}
	defer closeZ()
	verify := func() error {
		// To the end: an encrypted layer's HMAC is checked there.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if hr.n != desc.Size {
			return fmt.Errorf("compressed size is %d bytes but the manifest says %d: %w", hr.n, desc.Size, ErrDigestMismatch)
		}
		if got := "sha256:" + hex.EncodeToString(hr.h.Sum(nil)); got != desc.Digest.String() {
			return fmt.Errorf("compressed content is %s but the manifest says %s: %w", got, desc.Digest, ErrDigestMismatch)
		}
		return nil
	}
	_, err = p.Store.Put(diffID, ur, verify, limit)
	if err != nil && !errors.Is(err, ErrDigestMismatch) {
		// A stream cut short by tampering often surfaces as a decode
		// error; say whether the compressed digest also failed.
		if verr := verify(); verr != nil {
			return fmt.Errorf("%w (and %v)", verr, err)
		}
	}
	return err
}

// Layers are the image's layer descriptors as its manifest lists them
// (media types and annotations: encrypted layers carry their wrapped
// keys there).
func (in *Inspection) Layers() []v1.Descriptor {
	if in.res.uncompressed {
		return nil
	}
	return in.res.manifest.Layers
}

// OpenUncompressed opens layer i's uncompressed tar, unverified: for a
// builder whose product is verified otherwise (a layer disk, against the
// root hash a policy pins).
func (in *Inspection) OpenUncompressed(i int) (io.ReadCloser, error) {
	rc, err := in.res.layer(i)
	if err != nil {
		return nil, err
	}
	if in.res.uncompressed {
		return rc, nil
	}
	br := bufio.NewReaderSize(rc, 1<<20)
	ur, closeZ, err := decompress(br)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return readCloser{ur, func() error { closeZ(); return rc.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// UnknownSize is the size VerifyLayers gives an encrypted layer: its
// plaintext cannot be read without the key.
const UnknownSize = -1

// Inspection is an image whose manifest and config were fetched and
// verified (against a pinned digest, and the config against the manifest);
// its layers were not fetched.
type Inspection struct {
	Ref            Ref
	RepoDigest     string
	ManifestDigest string
	ConfigDigest   string
	Config         v1.ConfigFile
	DiffIDs        []string
	res            *resolved
}

// Inspect resolves raw (registry references over tr) and verifies its
// manifest and config.
func Inspect(ctx context.Context, raw string, tr http.RoundTripper) (*Inspection, error) {
	ref, err := ParseRef(raw)
	if err != nil {
		return nil, err
	}
	var res *resolved
	switch ref.Transport {
	case Registry:
		if tr == nil {
			tr = http.DefaultTransport
		}
		res, err = resolveRegistry(ctx, ref, tr)
	case OCILayout:
		res, err = resolveLayout(ref)
	case DockerArchive:
		res, err = resolveArchive(ref)
	}
	if err != nil {
		return nil, err
	}
	what := "image " + raw
	if got := sha256Digest(res.rawConfig); got != res.manifest.Config.Digest.String() {
		return nil, fmt.Errorf("%s: config is %s but the manifest says %s: %w", what, got, res.manifest.Config.Digest, ErrDigestMismatch)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(res.rawConfig))
	if err != nil {
		return nil, fmt.Errorf("%s: parse config: %w", what, err)
	}
	if (cfg.OS != "" && cfg.OS != "linux") || (cfg.Architecture != "" && cfg.Architecture != runtime.GOARCH) {
		return nil, fmt.Errorf("%s: image is for %s/%s, this sandbox runs linux/%s", what, cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	n := len(res.manifest.Layers)
	if len(cfg.RootFS.DiffIDs) != n {
		return nil, fmt.Errorf("%s: manifest lists %d layers but the config has %d diff_ids", what, n, len(cfg.RootFS.DiffIDs))
	}
	in := &Inspection{Ref: ref, RepoDigest: res.repoDigest, ManifestDigest: res.manifestDigest,
		ConfigDigest: res.manifest.Config.Digest.String(), Config: *cfg, DiffIDs: make([]string, n), res: res}
	for i, d := range cfg.RootFS.DiffIDs {
		if !digestRE.MatchString(d.String()) {
			return nil, fmt.Errorf("%s: layer %d/%d: diff_id %q is not sha256:<64 hex>", what, i+1, n, d.String())
		}
		in.DiffIDs[i] = d.String()
	}
	return in, nil
}

// VerifyLayers streams every layer (parallel at a time), checking each
// compressed digest against the manifest and each uncompressed sha256
// against the config's diff_ids, without unpacking anything. It returns each
// layer's uncompressed size, for a policy to pin.
func (in *Inspection) VerifyLayers(ctx context.Context, parallel int) ([]int64, error) {
	return in.VerifyLayersTee(ctx, parallel, nil)
}

// VerifyLayersTee is VerifyLayers that also copies each plain layer's
// uncompressed bytes to the writer tee returns for it: closed at the
// layer's end once its digests matched, or closed with the error (when it
// has CloseWithError). Encrypted layers are not read through tee.
func (in *Inspection) VerifyLayersTee(ctx context.Context, parallel int, tee func(i int) (io.WriteCloser, error)) ([]int64, error) {
	if parallel <= 0 {
		parallel = 4
	}
	sizes := make([]int64, len(in.DiffIDs))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range in.DiffIDs {
		g.Go(func() error {
			var w io.WriteCloser
			if tee != nil && !(i < len(in.Layers()) && imagecrypt.Encrypted(in.Layers()[i])) {
				var err error
				if w, err = tee(i); err != nil {
					return err
				}
			}
			n, err := verifyLayer(ctx, in.res, in.DiffIDs[i], i, w)
			if w != nil {
				if ce, ok := w.(interface{ CloseWithError(error) error }); ok && err != nil {
					ce.CloseWithError(err)
				} else {
					w.Close()
				}
			}
			if err != nil {
				return fmt.Errorf("image %s: layer %d/%d (%s): %w", in.Ref.Raw, i+1, len(in.DiffIDs), layerNameOf(in.res, in.DiffIDs[i], i), err)
			}
			sizes[i] = n
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sizes, nil
}

func layerNameOf(res *resolved, diffID string, i int) string {
	if res.uncompressed {
		return diffID
	}
	return res.manifest.Layers[i].Digest.String()
}

func verifyLayer(ctx context.Context, res *resolved, diffID string, i int, tee io.Writer) (int64, error) {
	rc, err := res.layer(i)
	if err != nil {
		return 0, fmt.Errorf("fetch: %w", err)
	}
	defer rc.Close()
	var uh io.Writer
	h := sha256.New()
	uh = h
	if tee != nil {
		uh = io.MultiWriter(h, tee)
	}
	var n int64
	if res.uncompressed {
		if n, err = io.Copy(uh, ctxReader{ctx, rc}); err != nil {
			return 0, err
		}
	} else if desc := res.manifest.Layers[i]; imagecrypt.Encrypted(desc) {
		// Without its key only the ciphertext can be checked; the agent
		// checks the plaintext against the diff_id once it decrypts.
		hr := &hashingReader{r: io.LimitReader(rc, desc.Size+1), h: sha256.New()}
		if _, err := io.Copy(io.Discard, ctxReader{ctx, hr}); err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		if got := "sha256:" + hex.EncodeToString(hr.h.Sum(nil)); hr.n != desc.Size || got != desc.Digest.String() {
			return 0, fmt.Errorf("encrypted content is %s (%d bytes) but the manifest says %s (%d bytes): %w", got, hr.n, desc.Digest, desc.Size, ErrDigestMismatch)
		}
		return UnknownSize, nil
	} else {
		hr := &hashingReader{r: io.LimitReader(rc, desc.Size+1), h: sha256.New()}
		br := bufio.NewReaderSize(ctxReader{ctx, hr}, 1<<20)
		ur, closeZ, err := decompress(br)
		if err != nil {
			return 0, err
		}
		defer closeZ()
		if n, err = io.CopyBuffer(uh, ur, make([]byte, 256<<10)); err != nil {
			return 0, fmt.Errorf("read: %w", err)
		}
		if _, err := io.Copy(io.Discard, br); err != nil {
			return 0, err
		}
		if hr.n != desc.Size {
			return 0, fmt.Errorf("compressed size is %d bytes but the manifest says %d: %w", hr.n, desc.Size, ErrDigestMismatch)
		}
		if got := "sha256:" + hex.EncodeToString(hr.h.Sum(nil)); got != desc.Digest.String() {
			return 0, fmt.Errorf("compressed content is %s but the manifest says %s: %w", got, desc.Digest, ErrDigestMismatch)
		}
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return 0, fmt.Errorf("uncompressed content is %s but the config's diff_id is %s: %w", got, diffID, ErrDigestMismatch)
	}
	return n, nil
}

// decompress returns the uncompressed stream of a layer (gzip, zstd or
// plain, sniffed from its first bytes) and its closer.
func decompress(br *bufio.Reader) (io.Reader, func(), error) {
	switch compression(br) {
	case "gzip":
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case "zstd":
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}
