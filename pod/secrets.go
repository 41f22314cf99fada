package pod

import (
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/sealed"
)

// SecretsOf reads the Secrets (v1) among a manifest's documents: name →
// key → value, from data (base64) and stringData, as the API server
// stores them.
func SecretsOf(docs []Document) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	for _, d := range docs {
		if d.Kind != "Secret" || d.APIVersion != "v1" {
			continue
		}
		js, err := yaml.YAMLToJSONStrict(d.Text)
		if err != nil {
			return nil, fmt.Errorf("the Secret %s: %w", d.Name, err)
		}
		var s corev1.Secret
		if err := json.Unmarshal(js, &s); err != nil {
			return nil, fmt.Errorf("the Secret %s: %w", d.Name, err)
		}
		m := map[string]string{}
		for k, v := range s.Data {
			m[k] = string(v)
		}
		for k, v := range s.StringData {
			m[k] = v
		}
		out[s.Name] = m
	}
	return out, nil
}

// secretEnv resolves an env value from a Secret of the manifest. Only a
// sealed secret is taken: its value is pinned in the policy, which the
// host reads, and the agent replaces it inside the sandbox; a plain value
// would be a secret in the host's hands.
func secretEnv(at string, e corev1.EnvVar, opts Options) (string, error) {
	ref := e.ValueFrom.SecretKeyRef
	if ref == nil {
		return "", fmt.Errorf("%s.valueFrom: only secretKeyRef is supported (to a sealed secret of a Secret in the same manifest): %w", at, ErrUnsupported)
	}
	if ref.Optional != nil && *ref.Optional {
		return "", fmt.Errorf("%s.valueFrom.secretKeyRef.optional: an optional secret cannot be pinned in the policy; remove optional: %w", at, ErrUnsupported)
	}
	s, ok := opts.Secrets[ref.Name]
	if !ok {
		return "", fmt.Errorf("%s.valueFrom.secretKeyRef names Secret %q, which is not in the manifest: put the Secret (its value a sealed secret: cocoon kbs seal) in the same file, so that the policy can pin what kubelet will pass", at, ref.Name)
	}
	v, ok := s[ref.Key]
	if !ok {
		return "", fmt.Errorf("%s.valueFrom.secretKeyRef: Secret %q has no key %q", at, ref.Name, ref.Key)
	}
	if _, err := sealed.Parse(v); err != nil {
		return "", fmt.Errorf("%s.valueFrom.secretKeyRef: Secret %q key %q is not a sealed secret (%v): its value would be pinned in the policy, which the host reads; store the value in the key broker and put its sealed reference in the Secret (cocoon kbs seal)", at, ref.Name, ref.Key, err)
	}
	return v, nil
}

// Bounds of a sealed secret volume.
const (
	MaxSealedFiles = 64
)

// secretVolume turns a Secret volume into a sealed volume: the Secret must
// be in the manifest and every value it projects a sealed secret (the
// policy pins the references; the agent writes the released values into
// a memory-backed, read-only volume). Items choose and rename keys, as
// kubelet does; modes are the item's or the volume's defaultMode (0644).
func secretVolume(at string, v corev1.Volume, opts Options) (*agentv1.SealedVolume, error) {
	s := v.Secret
	if s.Optional != nil && *s.Optional {
		return nil, fmt.Errorf("%s.secret.optional: an optional secret cannot be pinned in the policy; remove optional: %w", at, ErrUnsupported)
	}
	data, ok := opts.Secrets[s.SecretName]
	if !ok {
		return nil, fmt.Errorf("%s.secret.secretName %q is not a Secret of the manifest: put the Secret (its values sealed secrets: cocoon kbs seal) in the same file, so that the policy can pin what the volume holds", at, s.SecretName)
	}
	mode := uint32(0o644)
	if s.DefaultMode != nil {
		mode = uint32(*s.DefaultMode)
	}
	type item struct {
		key, path string
		mode      uint32
	}
	var items []item
	if len(s.Items) == 0 {
		for k := range data {
			items = append(items, item{k, k, mode})
		}
	}
	for i, it := range s.Items {
		m := mode
		if it.Mode != nil {
			m = uint32(*it.Mode)
		}
		if _, ok := data[it.Key]; !ok {
			return nil, fmt.Errorf("%s.secret.items[%d]: Secret %q has no key %q", at, i, s.SecretName, it.Key)
		}
		items = append(items, item{it.Key, it.Path, m})
	}
	if len(items) > MaxSealedFiles {
		return nil, fmt.Errorf("%s.secret: %d files, more than %d", at, len(items), MaxSealedFiles)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].path < items[j].path })
	out := &agentv1.SealedVolume{Name: v.Name}
	for _, it := range items {
		if err := sealed.CheckPath(it.path); err != nil {
			return nil, fmt.Errorf("%s.secret: %w", at, err)
		}
		if it.mode&^0o777 != 0 {
			return nil, fmt.Errorf("%s.secret: mode %#o of %q is not a permission mode", at, it.mode, it.path)
		}
		val := data[it.key]
		if _, err := sealed.Parse(val); err != nil {
			return nil, fmt.Errorf("%s.secret: Secret %q key %q is not a sealed secret (%v): its value would be pinned in the policy, which the host reads; store the value in the key broker and put its sealed reference in the Secret (cocoon kbs seal)", at, s.SecretName, it.key, err)
		}
		out.Files = append(out.Files, &agentv1.SealedFile{Path: it.path, Value: val, Mode: it.mode})
	}
	return out, nil
}
