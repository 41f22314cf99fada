// Package policygen generates a pod's policy on the host: it verifies every
// image the pod names (each layer against its digests), pins what decides
// what runs, and writes the policy package policy enforces in the agent.
package policygen

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/imagecrypt"
	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/layerdisk"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/resolve"
)

// Pod annotations that name the pod's key broker.
const (
	AnnotationKBS   = "cocoon.dev/kbs"
	AnnotationKBSCA = "cocoon.dev/kbs-ca" // PEM, base64
	// AnnotationAS pins the attestation service the in-pod Azure SKR API's
	// /attest/maa asks (its MAA-compatible route); AnnotationASCA its CA.
	AnnotationAS   = "cocoon.dev/attestation-service"
	AnnotationASCA = "cocoon.dev/attestation-service-ca" // PEM, base64
	// AnnotationSKR turns on the in-pod Azure SKR API: "true" serves it on
	// 127.0.0.1:8080, a number on that port.
	AnnotationSKR = "cocoon.dev/skr"
	// AnnotationDecryptionKey names the key broker resource holding the
	// private key of images encrypted for a JWE recipient (skopeo copy
	// --encryption-key jwe:PUB).
	AnnotationDecryptionKey = "cocoon.dev/decryption-key"
)

// GenerateOptions configure Generate.
type GenerateOptions struct {
	Settings *Settings
	// Debug allows exec of any command and reading logs, and marks the
	// policy as a debug policy.
	Debug bool
	// DisableStdio forbids the host to read containers' output.
	DisableStdio bool
	// Transport reaches registries (nil: the default).
	Transport http.RoundTripper
	// CacheDir remembers images whose layers were verified, by manifest
	// digest, so generating again is instant ("" = no cache).
	CacheDir string
	// Parallel is how many layers are verified at once (default 4).
	Parallel int
	// Trust says which images the policy trusts by signer rather than by
	// digest (nil: every image by digest).
	Trust *ImageTrust
	// LayerDisks pins each layer's verified disk (layerdisk: a
	// reproducible squashfs image and its dm-verity root hash) for images
	// pinned by digest and not encrypted, so VM sandboxes can take layers
	// from disks the host builds instead of pulling them.
	LayerDisks bool

	// From the pod's annotations: the JWE private key's resource, and
	// whether a key broker is named.
	decryptionKey string
	hasKBS        bool
}

// Generate builds the policy of a pod: for each image its digests and the
// config fields that decide what runs (every layer is verified against its
// digests, in parallel), and for each container exactly what may run.
func Generate(ctx context.Context, p *pod.Pod, o GenerateOptions) (*policy.Policy, error) {
	if o.Settings == nil {
		o.Settings = DefaultSettings()
	}
	kbs, err := endpoint(p.Annotations, AnnotationKBS, AnnotationKBSCA, "the key broker")
	if err != nil {
		return nil, err
	}
	o.decryptionKey, o.hasKBS = p.Annotations[AnnotationDecryptionKey], kbs != nil
	if o.decryptionKey != "" {
		if _, _, _, err := protocol.ParseURI(o.decryptionKey); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", AnnotationDecryptionKey, err)
		}
	}
	imgs, err := inspectAll(ctx, p.Images(), o)
	if err != nil {
		return nil, err
	}
	pol := &policy.Policy{
		FrameworkVersion: policy.FrameworkVersion, Debug: o.Debug,
		Sandbox:    policy.Sandbox{Name: p.Name, Hostname: p.Hostname, Volumes: []policy.Volume{}, Sysctls: p.Sysctls},
		Containers: map[string]*policy.Container{}, Images: imgs, KBS: kbs,
	}
	if pol.AttestationService, err = endpoint(p.Annotations, AnnotationAS, AnnotationASCA, "the attestation service"); err != nil {
		return nil, err
	}
	if pol.SKRPort, err = skrPort(p.Annotations[AnnotationSKR]); err != nil {
		return nil, err
	}
	pol.Sandbox.EncryptedVolumes = []policy.EncryptedVolume{}
	for _, v := range p.Encrypted {
		if pol.KBS == nil {
			return nil, fmt.Errorf("encrypted volume %q needs a key broker: add the annotation %s (cocoon kbs annotate)", v.GetName(), AnnotationKBS)
		}
		pol.Sandbox.EncryptedVolumes = append(pol.Sandbox.EncryptedVolumes, policy.EncryptedVolume{Name: v.GetName(), Source: v.GetSource(), Key: v.GetKeyUri(), ReadOnly: v.GetReadOnly()})
	}
	for _, v := range p.Volumes {
		pol.Sandbox.Volumes = append(pol.Sandbox.Volumes, policy.Volume{Name: v.GetName(), SizeLimitBytes: v.GetSizeLimitBytes()})
	}
	for _, v := range p.Sealed {
		if pol.KBS == nil {
			return nil, fmt.Errorf("the sealed secret volume %q needs a key broker: add the annotation %s (cocoon kbs annotate)", v.GetName(), AnnotationKBS)
		}
		sv := policy.SealedVolume{Name: v.GetName(), Files: []policy.SealedFile{}}
		for _, f := range v.GetFiles() {
			sv.Files = append(sv.Files, policy.SealedFile{Path: f.GetPath(), Value: f.GetValue(), Mode: f.GetMode()})
		}
		pol.Sandbox.SealedVolumes = append(pol.Sandbox.SealedVolumes, sv)
	}
	for _, c := range append(append([]pod.Container{}, p.Init...), p.Main...) {
		pc, err := containerPolicy(c, imgs[c.Spec.GetImage()], p.Hostname, o)
		if err != nil {
			return nil, err
		}
		pol.Containers[c.Spec.GetName()] = pc
	}
	return pol, nil
}

func containerPolicy(c pod.Container, img policy.Image, hostname string, o GenerateOptions) (*policy.Container, error) {
	s := c.Spec
	if s.GetPrivileged() {
		return nil, fmt.Errorf("container %q is privileged: a privileged container can reach the sandbox's kernel and devices, so it cannot be part of a confidential pod", s.GetName())
	}
	caps, err := resolve.Caps(s.GetCapabilitiesAdd(), s.GetCapabilitiesDrop())
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", s.GetName(), err)
	}
	pc := &policy.Container{
		Kind: c.Kind, Image: s.GetImage(),
		Args:        resolve.Args(s.GetCommand(), s.GetArgs(), img.Entrypoint, img.Cmd),
		Env:         resolve.Env(img.Env, policy.EnvOf(s.GetEnv()), hostname),
		EnvPatterns: append([]string{}, o.Settings.EnvPatterns...),
		WorkingDir:  policy.WorkingDir(s.GetWorkingDir(), img.WorkingDir),
		RunAsUser:   -1, RunAsGroup: -1, RunAsNonRoot: s.GetRunAsNonRoot(),
		ReadOnlyRootFilesystem: s.GetReadOnlyRootFilesystem(), NoNewPrivileges: s.GetNoNewPrivileges(),
		SharePIDNamespace: s.GetSharePidNamespace(), SupplementalGroups: s.GetSupplementalGroups(),
		Stdin: s.GetStdin(), TTY: s.GetTty(),
		Capabilities: nonNil(caps), Mounts: policy.MountsOf(s.GetMounts()),
		Resources: policy.ResourcesOf(s.GetResources()),
		Exec:      append([][]string{}, o.Settings.Exec...), ExecAny: o.Debug, ExecStdin: o.Settings.ExecStdin || o.Debug,
		Signals: append([]int{}, o.Settings.Signals...), Stdio: !o.DisableStdio || o.Debug,
	}
	if b := s.GetSeccompProfile(); len(b) > 0 {
		_, d, err := policy.SeccompProfile(b)
		if err != nil {
			return nil, fmt.Errorf("container %q: %w", s.GetName(), err)
		}
		pc.Seccomp = d
	}
	if s.GetHasRunAsUser() {
		pc.RunAsUser = s.GetRunAsUser()
	}
	if s.GetHasRunAsGroup() {
		pc.RunAsGroup = s.GetRunAsGroup()
	}
	if len(pc.Args) == 0 {
		return nil, fmt.Errorf("container %q: no command: the image has no entrypoint or cmd and the pod spec gives none", s.GetName())
	}
	return pc, nil
}

func inspectAll(ctx context.Context, refs []string, o GenerateOptions) (map[string]policy.Image, error) {
	out := make(map[string]policy.Image, len(refs))
	errs := make([]error, len(refs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := inspectImage(ctx, ref, o)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			out[ref] = img
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func inspectImage(ctx context.Context, ref string, o GenerateOptions) (policy.Image, error) {
	signers, err := o.Trust.Signers(ref)
	if err != nil {
		return policy.Image{}, err
	}
	in, err := image.Inspect(ctx, ref, o.Transport)
	if err != nil {
		return policy.Image{}, err
	}
	key, err := decryption(ref, in, o)
	if err != nil {
		return policy.Image{}, err
	}
	if len(signers) > 0 {
		img, err := signedImage(ctx, ref, in, signers, o)
		img.DecryptionKey = key
		return img, err
	}
	sizes, disks, err := verifiedSizes(ctx, in, o)
	if err != nil {
		return policy.Image{}, err
	}
	c := in.Config.Config
	return policy.Image{
		Digest: in.ManifestDigest, ConfigDigest: in.ConfigDigest, Layers: in.DiffIDs, LayerSizes: sizes, DecryptionKey: key, LayerDisks: disks,
		Entrypoint: nonNil(c.Entrypoint), Cmd: nonNil(c.Cmd), Env: nonNil(c.Env), WorkingDir: c.WorkingDir, User: c.User,
	}, nil
}

// decryption checks what an encrypted image needs: a key broker for its
// keys and, for layers wrapped only for a JWE recipient, the broker
// resource of the private key. It returns that resource ("" when none is
// needed).
func decryption(ref string, in *image.Inspection, o GenerateOptions) (string, error) {
	encrypted, jweOnly := 0, 0
	for _, d := range in.Layers() {
		if !imagecrypt.Encrypted(d) {
			continue
		}
		encrypted++
		if d.Annotations[imagecrypt.AnnotationProvider] == "" {
			if d.Annotations[imagecrypt.AnnotationJWE] == "" {
				return "", fmt.Errorf("image %s: layer %s is encrypted with no key annotation cocoon reads (%s or %s)", ref, d.Digest, imagecrypt.AnnotationProvider, imagecrypt.AnnotationJWE)
			}
			jweOnly++
		}
	}
	switch {
	case encrypted == 0:
		return "", nil
	case !o.hasKBS:
		return "", fmt.Errorf("image %s is encrypted: its keys come from a key broker; add the annotation %s (cocoon kbs annotate)", ref, AnnotationKBS)
	case jweOnly > 0 && o.decryptionKey == "":
		return "", fmt.Errorf("image %s has %d layer(s) encrypted for a JWE recipient: store the private key in the key broker and name it with the annotation %s: kbs:///repo/type/tag", ref, jweOnly, AnnotationDecryptionKey)
	case jweOnly > 0:
		return o.decryptionKey, nil
	}
	return "", nil
}

// signedImage is the policy's entry of an image trusted by signer: the
// signers and the config fields that decide what runs, not the digests.
// The image must be signed now, so a policy is not written that its own
// image fails.
func signedImage(ctx context.Context, ref string, in *image.Inspection, signers []policy.Signer, o GenerateOptions) (policy.Image, error) {
	if in.Ref.Transport != image.Registry {
		return policy.Image{}, fmt.Errorf("image %s: trusted by signature, which lives in a registry; pin a local image by digest instead", ref)
	}
	vs := make([]*imagesig.Verifier, len(signers))
	for i, s := range signers {
		v, err := imagesig.New(s)
		if err != nil {
			return policy.Image{}, fmt.Errorf("image %s: %w", ref, err)
		}
		vs[i] = v
	}
	if _, err := imagesig.Check(ctx, in.Ref.Name.Context(), []string{in.RepoDigest, in.ManifestDigest}, vs, o.Transport); err != nil {
		return policy.Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	c := in.Config.Config
	return policy.Image{
		SignedBy: signers, Layers: []string{},
		Entrypoint: nonNil(c.Entrypoint), Cmd: nonNil(c.Cmd), Env: nonNil(c.Env), WorkingDir: c.WorkingDir, User: c.User,
	}, nil
}

// cacheEntry is what the generator remembers of an image whose layers it
// verified, by manifest digest.
type cacheEntry struct {
	ConfigDigest string             `json:"config_digest"`
	LayerSizes   []int64            `json:"layer_sizes"`
	LayerDisks   []policy.LayerDisk `json:"layer_disks,omitempty"`
}

// verifiedSizes verifies every layer of in (or finds it verified in the
// cache) and returns the layers' uncompressed sizes.
func verifiedSizes(ctx context.Context, in *image.Inspection, o GenerateOptions) ([]int64, []policy.LayerDisk, error) {
	wantDisks := o.LayerDisks && !encryptedImage(in)
	marker := ""
	if o.CacheDir != "" && image.ValidDigest(in.ManifestDigest) {
		marker = filepath.Join(o.CacheDir, strings.TrimPrefix(in.ManifestDigest, "sha256:"))
		var e cacheEntry
		if b, err := os.ReadFile(marker); err == nil && json.Unmarshal(b, &e) == nil &&
			e.ConfigDigest == in.ConfigDigest && len(e.LayerSizes) == len(in.DiffIDs) &&
			(!wantDisks || len(e.LayerDisks) == len(in.DiffIDs)) {
			if !wantDisks {
				e.LayerDisks = nil
			}
			return e.LayerSizes, e.LayerDisks, nil
		}
	}
	var disks []policy.LayerDisk
	var tee func(int) (io.WriteCloser, error)
	var wait func() error
	if wantDisks {
		disks = make([]policy.LayerDisk, len(in.DiffIDs))
		tee, wait = diskBuilders(in.DiffIDs, disks)
	}
	sizes, err := in.VerifyLayersTee(ctx, o.Parallel, tee)
	if wait != nil {
		if werr := wait(); werr != nil {
			// A layer that makes no disk (an entry squashfs cannot
			// hold): the image is pulled in the guest instead.
			disks = nil
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if marker != "" && os.MkdirAll(o.CacheDir, 0o700) == nil {
		b, _ := json.Marshal(cacheEntry{ConfigDigest: in.ConfigDigest, LayerSizes: sizes, LayerDisks: disks})
		_ = os.WriteFile(marker, b, 0o644)
	}
	return sizes, disks, nil
}

func encryptedImage(in *image.Inspection) bool {
	for _, d := range in.Layers() {
		if imagecrypt.Encrypted(d) {
			return true
		}
	}
	return false
}

// diskBuilders builds each layer's disk from its uncompressed stream, as
// the layers are verified, into a temporary file it removes: only the
// root hash and size are kept (the node builds its own disks, which must
// come out the same).
func diskBuilders(diffIDs []string, out []policy.LayerDisk) (func(int) (io.WriteCloser, error), func() error) {
	var wg sync.WaitGroup
	errs := make([]error, len(diffIDs))
	tee := func(i int) (io.WriteCloser, error) {
		f, err := os.CreateTemp("", "cocoon-layerdisk-*")
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer os.Remove(f.Name())
			defer f.Close()
			in, err := layerdisk.Make(pr, diffIDs[i], f)
			// The rest of the stream (tar padding, or all of it when the
			// disk failed) is drained: the verifier never waits on or
			// fails because of the disk.
			if _, derr := io.Copy(io.Discard, pr); err == nil {
				err = derr
			}
			if err != nil {
				errs[i] = fmt.Errorf("layer %d (%s): its disk: %w", i+1, diffIDs[i], err)
				return
			}
			out[i] = policy.LayerDisk{RootHash: in.Verity.RootHash, DataBlocks: in.Verity.DataBlocks}
		}()
		return pw, nil
	}
	wait := func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
	return tee, wait
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// endpoint reads a pinned service: an https:// URL and its CA (base64 PEM).
func endpoint(ann map[string]string, urlKey, caKey, what string) (*policy.KBS, error) {
	u := ann[urlKey]
	if u == "" {
		return nil, nil
	}
	if !strings.HasPrefix(u, "https://") {
		return nil, fmt.Errorf("annotation %s = %q: %s must be an https:// URL", urlKey, u, what)
	}
	e := &policy.KBS{URL: u}
	if ca := ann[caKey]; ca != "" {
		b, err := base64.StdEncoding.DecodeString(ca)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: not base64: %w", caKey, err)
		}
		e.CA = string(b)
	}
	return e, nil
}

// skrPort reads the SKR annotation: "" or "false" off, "true" 8080, or a
// port.
func skrPort(v string) (int, error) {
	switch v {
	case "", "false":
		return 0, nil
	case "true":
		return 8080, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 || n == 8006 {
		return 0, fmt.Errorf("annotation %s = %q: want \"true\" (port 8080) or a port 1-65535 other than the in-pod API's 8006", AnnotationSKR, v)
	}
	return n, nil
}
