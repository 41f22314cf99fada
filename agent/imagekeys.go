package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/imagecrypt"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/policy"
)

// layerKeys unwraps the keys of an image's encrypted layers inside the
// sandbox, for one pull: a layer whose key the broker holds (Confidential
// Containers' provider.attestation-agent annotation: the key id is a
// broker resource, released to this sandbox's attested session) or a
// JWE-wrapped layer, opened with the private key the policy names (a
// broker resource too). The host supplies neither key. Each broker
// resource is fetched once per pull and zeroed after it.
type layerKeys struct {
	a        *Agent
	ref      string
	jweKey   string // the policy's decryption_key, "" for none
	mu       sync.Mutex
	released map[string][]byte
}

func (a *Agent) newLayerKeys(ref string) *layerKeys {
	k := &layerKeys{a: a, ref: ref, released: map[string][]byte{}}
	if e, ok := a.cfg.Enforcer.(*policy.Engine); ok && e.Loaded() != nil {
		k.jweKey = e.Loaded().Policy.Images[ref].DecryptionKey
	}
	return k
}

// close zeroes the released keys.
func (k *layerKeys) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, b := range k.released {
		clear(b)
		delete(k.released, id)
	}
}

func (k *layerKeys) fetch(ctx context.Context, uri string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if b, ok := k.released[uri]; ok {
		return b, nil
	}
	repo, typ, tag, err := protocol.ParseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errInvalid)
	}
	b, err := k.a.resource(ctx, repo, typ, tag)
	if err != nil {
		return nil, fmt.Errorf("the key %s was not released: %w", uri, err)
	}
	k.released[uri] = b
	return b, nil
}

// unwrap is the puller's LayerKey.
func (k *layerKeys) unwrap(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	var errs []error
	if ann := d.Annotations[imagecrypt.AnnotationProvider]; ann != "" {
		p, err := imagecrypt.ParsePacket(ann)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, errInvalid)
		}
		kek, err := k.fetch(ctx, p.Kid)
		if err == nil {
			return p.Unwrap(kek)
		}
		errs = append(errs, err)
	}
	if ann := d.Annotations[imagecrypt.AnnotationJWE]; ann != "" {
		if k.jweKey == "" {
			errs = append(errs, fmt.Errorf("the layer is wrapped for a JWE recipient and the policy names no decryption key for %q (annotate the pod with cocoon.dev/decryption-key: kbs:///… and generate its policy again)", k.ref))
		} else {
			priv, err := k.fetch(ctx, k.jweKey)
			if err != nil {
				errs = append(errs, err)
			} else {
				return imagecrypt.UnwrapJWE(ann, priv)
			}
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: the layer has no key annotation cocoon reads (%s or %s)", imagecrypt.ErrNoKey, imagecrypt.AnnotationProvider, imagecrypt.AnnotationJWE)
	}
	return nil, fmt.Errorf("%w: %w", imagecrypt.ErrNoKey, errors.Join(errs...))
}
