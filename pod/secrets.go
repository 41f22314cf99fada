package pod

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

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
