package imagecrypt

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containers/ocicrypt/blockcipher"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
)

// Wrapping says for whom an image's layer keys are wrapped: a key
// broker's key (Kid, a kbs:/// resource holding the 32-byte KEK) and/or
// JWE recipients (public keys, PEM or JWK). At least one.
type Wrapping struct {
	Kid        string
	KEK        []byte
	Recipients [][]byte
}

// EncryptImage returns src with every layer encrypted under a fresh key of
// its own, as ocicrypt encrypts: the ciphertext of each layer is written
// to a 0600 file in dir, which the caller removes once the image is
// pushed. The config (and its plaintext diff_ids) is kept, so the
// decrypted layers verify against it.
func EncryptImage(src v1.Image, w Wrapping, dir string) (v1.Image, error) {
	if w.KEK == nil && len(w.Recipients) == 0 {
		return nil, errors.New("encrypt: give a key broker key or a JWE recipient")
	}
	if w.KEK != nil && len(w.KEK) != 32 {
		return nil, fmt.Errorf("encrypt: the key-encryption key is %d bytes, want 32", len(w.KEK))
	}
	cf, err := src.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("encrypt: config: %w", err)
	}
	m, err := src.Manifest()
	if err != nil {
		return nil, fmt.Errorf("encrypt: manifest: %w", err)
	}
	layers, err := src.Layers()
	if err != nil {
		return nil, fmt.Errorf("encrypt: layers: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	cfg := cf.DeepCopy()
	cfg.RootFS.DiffIDs = nil
	cfg.History = nil
	if base, err = mutate.ConfigFile(base, cfg); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	var adds []mutate.Addendum
	for i, l := range layers {
		if Encrypted(m.Layers[i]) {
			return nil, fmt.Errorf("encrypt: layer %d (%s) is encrypted already", i+1, m.Layers[i].Digest)
		}
		el, ann, err := encryptLayer(l, w, dir)
		if err != nil {
			return nil, fmt.Errorf("encrypt: layer %d (%s): %w", i+1, m.Layers[i].Digest, err)
		}
		h := v1.History{}
		if i < len(cf.History) {
			h = cf.History[i]
		}
		adds = append(adds, mutate.Addendum{Layer: el, Annotations: ann, MediaType: el.mt, History: h})
	}
	return mutate.Append(base, adds...)
}

// encryptLayer encrypts one layer's compressed stream to a file.
func encryptLayer(l v1.Layer, w Wrapping, dir string) (*fileLayer, map[string]string, error) {
	mt, err := l.MediaType()
	if err != nil {
		return nil, nil, err
	}
	diffID, err := l.DiffID()
	if err != nil {
		return nil, nil, err
	}
	plainDigest, err := l.Digest()
	if err != nil {
		return nil, nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, nil, err
	}
	er, fin, err := h.Encrypt(rc, blockcipher.AES256CTR)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.CreateTemp(dir, "layer-*.enc")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return nil, nil, err
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, sum), er)
	if err != nil {
		return nil, nil, err
	}
	opts, err := fin()
	if err != nil {
		return nil, nil, err
	}
	opts.Private.Digest = toDigest(plainDigest)
	priv, err := json.Marshal(opts.Private)
	if err != nil {
		return nil, nil, err
	}
	defer clear(priv)
	clear(opts.Private.SymmetricKey)
	pub, err := json.Marshal(opts.Public)
	if err != nil {
		return nil, nil, err
	}
	ann := map[string]string{AnnotationPubOpts: b64(pub)}
	if w.KEK != nil {
		if ann[AnnotationProvider], err = WrapPacket(w.Kid, w.KEK, priv); err != nil {
			return nil, nil, err
		}
	}
	if len(w.Recipients) > 0 {
		if ann[AnnotationJWE], err = WrapJWE(priv, w.Recipients); err != nil {
			return nil, nil, err
		}
	}
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))}
	return &fileLayer{path: f.Name(), digest: d, diffID: diffID, size: n, mt: types.MediaType(string(mt) + EncryptedSuffix)}, ann, nil
}

// fileLayer is an encrypted layer on disk: its digest is the
// ciphertext's, its diff_id the plaintext's (what the config lists).
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
	mt             types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("an encrypted layer has no uncompressed form here")
}

func toDigest(h v1.Hash) digest.Digest { return digest.Digest(h.String()) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
