package image

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// LayerStore is the agent-private store of unpacked layers, one directory per
// uncompressed layer digest (diff_id), usable as overlayfs lower layers. A
// layer appears in the store only after its content was verified, so a
// present layer is a verified one.
type LayerStore struct {
	dir string
}

// NewLayerStore opens (creating if needed) a layer store rooted at dir.
func NewLayerStore(dir string) (*LayerStore, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create layer store: %w", err)
		}
	}
	return &LayerStore{dir: dir}, nil
}

// Path is the unpacked filesystem of the layer with the given diff_id.
func (s *LayerStore) Path(diffID string) string {
	return filepath.Join(s.dir, "sha256", strings.TrimPrefix(diffID, "sha256:"), "fs")
}

// Has reports whether the layer is in the store.
func (s *LayerStore) Has(diffID string) bool {
	if !digestRE.MatchString(diffID) {
		return false
	}
	_, err := os.Stat(s.Path(diffID))
	return err == nil
}

// ErrDigestMismatch marks content that does not hash to the digest its
// manifest or config claims.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrLayerTooLarge marks a layer that expands past its bound.
var ErrLayerTooLarge = errors.New("layer too large")

// DefaultMaxLayerBytes bounds a layer's uncompressed size when nothing
// pins it (4 GiB).
const DefaultMaxLayerBytes int64 = 4 << 30

// Put unpacks the uncompressed layer tar read from r into a staging
// directory, checks that its sha256 equals diffID and, only if it does and
// verify (when given) returns nil, applies the deferred directory times and
// commits it to the store. A stream longer than limit bytes (> 0) is cut off
// there and refused: a small compressed layer cannot expand without bound
// before its digest is compared. Nothing of a refused layer stays.
func (s *LayerStore) Put(diffID string, r io.Reader, verify func() error, limit int64) (UnpackStats, error) {
	if !digestRE.MatchString(diffID) {
		return UnpackStats{}, fmt.Errorf("diff_id %q is not sha256:<64 hex>", diffID)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(s.dir, "tmp", hex.EncodeToString(rnd[:]))
	if err := os.MkdirAll(filepath.Join(tmp, "fs"), 0o755); err != nil {
		return UnpackStats{}, fmt.Errorf("create layer directory: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.RemoveAll(tmp)
		}
	}()
	h := sha256.New()
	if limit > 0 {
		r = &boundedReader{r: r, left: limit, limit: limit}
	}
	pend, st, err := extract(io.TeeReader(r, h), filepath.Join(tmp, "fs"))
	if err != nil {
		return st, err
	}
	// The tar reader may stop before the archive's trailing padding.
	if _, err := io.Copy(h, r); err != nil {
		return st, fmt.Errorf("read layer: %w", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return st, fmt.Errorf("uncompressed content is %s but the image config's diff_id is %s: %w", got, diffID, ErrDigestMismatch)
	}
	if verify != nil {
		if err := verify(); err != nil {
			return st, err
		}
	}
	if err := pend.finish(); err != nil {
		return st, err
	}
	final := filepath.Dir(s.Path(diffID))
	if err := os.Rename(tmp, final); err != nil {
		if s.Has(diffID) { // another pull committed the same layer first
			return st, nil
		}
		return st, fmt.Errorf("commit layer %s: %w", diffID, err)
	}
	committed = true
	return st, nil
}

// Remove deletes a layer from the store.
func (s *LayerStore) Remove(diffID string) error {
	if !digestRE.MatchString(diffID) {
		return fmt.Errorf("diff_id %q is not sha256:<64 hex>", diffID)
	}
	return os.RemoveAll(filepath.Dir(s.Path(diffID)))
}

// boundedReader fails once more than limit bytes were read.
type boundedReader struct {
	r           io.Reader
	left, limit int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a stream of exactly limit bytes from a
		// longer one.
		var one [1]byte
		n, err := b.r.Read(one[:])
		if n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("the uncompressed layer is larger than %d bytes, its bound: %w", b.limit, ErrLayerTooLarge)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r    io.Reader
	h    hash.Hash
	n    int64
	tick func(int64)
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	if n > 0 {
		hr.h.Write(p[:n])
		hr.n += int64(n)
		if hr.tick != nil {
			hr.tick(int64(n))
		}
	}
	return n, err
}

// compression sniffs a layer's compression from its first bytes.
func compression(br *bufio.Reader) string {
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		return "gzip"
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		return "zstd"
	}
	return "none"
}
