package agent

import (
	"context"
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/policy"
)

// signatureCheck is the pull check of an image the loaded policy trusts by
// signer (nil when it pins the image by digest, or no policy is loaded):
// a signature of a policy signer must verify before any layer is fetched,
// and the signed image's config must say exactly what the policy's copy
// says, since the container is built from the former and policed against
// the latter.
func (a *Agent) signatureCheck(ref string) (image.Check, error) {
	e, ok := a.cfg.Enforcer.(*policy.Engine)
	if !ok || e.Loaded() == nil {
		return nil, nil
	}
	pinned, ok := e.Loaded().Policy.Images[ref]
	if !ok || len(pinned.SignedBy) == 0 {
		return nil, nil
	}
	signers := make([]*imagesig.Verifier, len(pinned.SignedBy))
	for i, s := range pinned.SignedBy {
		v, err := imagesig.New(s)
		if err != nil {
			return nil, fmt.Errorf("the policy's signer %d of image %q: %w: %w", i+1, ref, err, errInvalid)
		}
		signers[i] = v
	}
	return func(ctx context.Context, in *image.Inspection) (string, error) {
		if in.Ref.Transport != image.Registry {
			return "", fmt.Errorf("the policy trusts %q by its signature, which lives in a registry; %s is not a registry reference: %w", ref, in.Ref, errInvalid)
		}
		who, err := imagesig.Check(ctx, in.Ref.Name.Context(), []string{in.RepoDigest, in.ManifestDigest}, signers, a.cfg.Transport)
		if err != nil {
			return "", err
		}
		if err := sameProcess(pinned, in.Config.Config); err != nil {
			return "", fmt.Errorf("signed by %s, but %w; regenerate the policy for this image: %w", who, err, ErrDenied)
		}
		return who, nil
	}, nil
}

// sameProcess says where a signed image's config differs from the policy's
// copy in what decides what runs.
func sameProcess(p policy.Image, c v1.Config) error {
	eq := func(a, b []string) bool { return len(a) == 0 && len(b) == 0 || slices.Equal(a, b) }
	switch {
	case !eq(c.Entrypoint, p.Entrypoint):
		return fmt.Errorf("its entrypoint is %q, the policy's copy %q", c.Entrypoint, p.Entrypoint)
	case !eq(c.Cmd, p.Cmd):
		return fmt.Errorf("its cmd is %q, the policy's copy %q", c.Cmd, p.Cmd)
	case !eq(c.Env, p.Env):
		return fmt.Errorf("its env is %q, the policy's copy %q", c.Env, p.Env)
	case c.WorkingDir != p.WorkingDir:
		return fmt.Errorf("its working directory is %q, the policy's copy %q", c.WorkingDir, p.WorkingDir)
	case c.User != p.User:
		return fmt.Errorf("its user is %q, the policy's copy %q", c.User, p.User)
	}
	return nil
}
