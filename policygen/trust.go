package policygen

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"cocoon.dev/cocoon/imagesig"
	"cocoon.dev/cocoon/policy"
)

// ImageTrust says how the generated policy trusts each image: by its
// digests (the default) or by who signed it.
type ImageTrust struct {
	// SignedBy applies to every image not matched by Containers.
	SignedBy []policy.Signer
	// Containers is a containers-policy.json (containers-policy.json(5),
	// what Podman, CRI-O and Confidential Containers' image-rs read); its
	// docker transport's scopes decide per image.
	Containers *ContainersPolicy
}

// Signers returns the signers the policy trusts for ref (none: pin its
// digests), or an error when the image policy rejects the image or asks
// for what cocoon cannot check.
func (t *ImageTrust) Signers(ref string) ([]policy.Signer, error) {
	if t == nil {
		return nil, nil
	}
	if t.Containers != nil {
		reqs, scope, err := t.Containers.requirements(ref)
		if err != nil {
			return nil, err
		}
		if reqs != nil {
			return t.Containers.signers(ref, scope, reqs)
		}
	}
	return t.SignedBy, nil
}

// ContainersPolicy is the part of containers-policy.json cocoon reads.
type ContainersPolicy struct {
	Default    []Requirement                       `json:"default"`
	Transports map[string]map[string][]Requirement `json:"transports"`
	// dir resolves relative key paths (the file's directory).
	dir string
}

// Requirement is one policy requirement of containers-policy.json.
type Requirement struct {
	Type               string          `json:"type"`
	KeyType            string          `json:"keyType,omitempty"`
	KeyPath            string          `json:"keyPath,omitempty"`
	KeyPaths           []string        `json:"keyPaths,omitempty"`
	KeyData            string          `json:"keyData,omitempty"`
	KeyDatas           []string        `json:"keyDatas,omitempty"`
	Fulcio             *Fulcio         `json:"fulcio,omitempty"`
	RekorPublicKeyPath string          `json:"rekorPublicKeyPath,omitempty"`
	RekorPublicKeyData string          `json:"rekorPublicKeyData,omitempty"`
	SignedIdentity     json.RawMessage `json:"signedIdentity,omitempty"`
}

// Fulcio is a sigstoreSigned requirement's keyless part.
type Fulcio struct {
	CAPath       string `json:"caPath,omitempty"`
	CAData       string `json:"caData,omitempty"`
	OIDCIssuer   string `json:"oidcIssuer"`
	SubjectEmail string `json:"subjectEmail"`
}

// LoadContainersPolicy reads a containers-policy.json file.
func LoadContainersPolicy(path string) (*ContainersPolicy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image policy: %w", err)
	}
	var p ContainersPolicy
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("image policy %s: %w", path, err)
	}
	if len(p.Default) == 0 {
		return nil, fmt.Errorf("image policy %s: no \"default\" requirement (containers-policy.json(5) requires one)", path)
	}
	p.dir = filepath.Dir(path)
	return &p, nil
}

// requirements finds the most specific docker-transport scope of ref
// (the reference, its repository, each namespace above it, the host, then
// *.domain wildcards), then the transport's default (""), then the
// policy's default.
func (p *ContainersPolicy) requirements(ref string) ([]Requirement, string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, "", fmt.Errorf("image policy: %q: %w", ref, err)
	}
	docker := p.Transports["docker"]
	repo := r.Context()
	// containers-policy.json names Docker Hub docker.io.
	hub := func(s string) string {
		if rest, ok := strings.CutPrefix(s, name.DefaultRegistry+"/"); ok {
			return "docker.io/" + rest
		}
		return s
	}
	scopes := []string{hub(r.Name()), hub(repo.Name())}
	for s := hub(repo.Name()); strings.Contains(s, "/"); {
		s = s[:strings.LastIndex(s, "/")]
		scopes = append(scopes, s)
	}
	host := repo.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	for h := host; strings.Contains(h, "."); {
		h = h[strings.Index(h, ".")+1:]
		scopes = append(scopes, "*."+h)
	}
	scopes = append(scopes, "")
	for _, s := range scopes {
		if reqs, ok := docker[s]; ok {
			where := "transports.docker[" + s + "]"
			if s == "" {
				where = "the docker transport's default"
			}
			return reqs, where, nil
		}
	}
	return p.Default, "default", nil
}

// signers turns one scope's requirements into the policy's signers.
func (p *ContainersPolicy) signers(ref, scope string, reqs []Requirement) ([]policy.Signer, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("image policy: %s for %s lists no requirement", scope, ref)
	}
	if len(reqs) > 1 {
		return nil, fmt.Errorf("image policy: %s for %s lists %d requirements; cocoon checks one requirement per scope (list the keys of one sigstoreSigned in keyPaths)", scope, ref, len(reqs))
	}
	r := reqs[0]
	switch r.Type {
	case "insecureAcceptAnything":
		// cocoon still pins the image's digests.
		return nil, nil
	case "reject":
		return nil, fmt.Errorf("image policy: %s rejects %s", scope, ref)
	case "signedBy":
		return nil, fmt.Errorf("image policy: %s for %s asks for a GPG signature (signedBy); cocoon verifies Sigstore signatures (sigstoreSigned)", scope, ref)
	case "sigstoreSigned":
	default:
		return nil, fmt.Errorf("image policy: %s for %s: unknown requirement type %q", scope, ref, r.Type)
	}
	var keys [][]byte
	for _, k := range append(nonEmpty(r.KeyPath), r.KeyPaths...) {
		b, err := os.ReadFile(p.path(k))
		if err != nil {
			return nil, fmt.Errorf("image policy: %s: %w", scope, err)
		}
		keys = append(keys, b)
	}
	for _, k := range append(nonEmpty(r.KeyData), r.KeyDatas...) {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("image policy: %s: keyData is not base64: %w", scope, err)
		}
		keys = append(keys, b)
	}
	var out []policy.Signer
	for _, k := range keys {
		s := policy.Signer{Key: string(k)}
		if _, err := imagesig.New(s); err != nil {
			return nil, fmt.Errorf("image policy: %s: %w", scope, err)
		}
		out = append(out, s)
	}
	if r.Fulcio != nil {
		s, err := p.fulcioSigner(r)
		if err != nil {
			return nil, fmt.Errorf("image policy: %s: %w", scope, err)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("image policy: %s for %s: sigstoreSigned names no key and no fulcio", scope, ref)
	}
	return out, nil
}

func (p *ContainersPolicy) path(f string) string {
	if filepath.IsAbs(f) {
		return f
	}
	return filepath.Join(p.dir, f)
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// fulcioSigner builds a keyless signer from a sigstoreSigned's fulcio CA
// and Rekor key: a trusted root of exactly those.
func (p *ContainersPolicy) fulcioSigner(r Requirement) (policy.Signer, error) {
	f := r.Fulcio
	if f.OIDCIssuer == "" || f.SubjectEmail == "" {
		return policy.Signer{}, errors.New("fulcio needs oidcIssuer and subjectEmail")
	}
	caPEM, err := p.data(f.CAPath, f.CAData, "fulcio CA")
	if err != nil {
		return policy.Signer{}, err
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM(caPEM)
	if err != nil || len(certs) == 0 {
		return policy.Signer{}, fmt.Errorf("fulcio CA: no certificate (%v)", err)
	}
	ca := &root.FulcioCertificateAuthority{Root: certs[len(certs)-1], Intermediates: certs[:len(certs)-1]}
	rekorPEM, err := p.data(r.RekorPublicKeyPath, r.RekorPublicKeyData, "rekor public key")
	if err != nil {
		return policy.Signer{}, err
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(rekorPEM)
	if err != nil {
		return policy.Signer{}, fmt.Errorf("rekor public key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return policy.Signer{}, fmt.Errorf("rekor public key: %w", err)
	}
	id := sha256.Sum256(der)
	// containers-policy.json gives the log no validity period: the key
	// is trusted at any time (sigstore-go needs a start).
	logs := map[string]*root.TransparencyLog{fmt.Sprintf("%x", id): {
		ID: id[:], PublicKey: pub, HashFunc: crypto.SHA256, SignatureHashFunc: crypto.SHA256,
		BaseURL: "https://rekor.invalid", ValidityPeriodStart: time.Unix(1, 0),
	}}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, []root.CertificateAuthority{ca}, nil, nil, logs)
	if err != nil {
		return policy.Signer{}, err
	}
	js, err := tr.MarshalJSON()
	if err != nil {
		return policy.Signer{}, err
	}
	s := policy.Signer{Identity: f.SubjectEmail, Issuer: f.OIDCIssuer, TrustedRoot: string(js), TransparencyLog: true}
	if _, err := imagesig.New(s); err != nil {
		return policy.Signer{}, err
	}
	return s, nil
}

func (p *ContainersPolicy) data(path, data, what string) ([]byte, error) {
	switch {
	case path != "" && data != "":
		return nil, fmt.Errorf("%s: give a path or data, not both", what)
	case path != "":
		return os.ReadFile(p.path(path))
	case data != "":
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, fmt.Errorf("%s: not base64: %w", what, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%s missing", what)
}
