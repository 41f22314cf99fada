// Package sealed reads and writes sealed secrets in Confidential
// Containers' format: a value that stands in for a secret in a pod's
// manifest (an environment variable, a Kubernetes Secret) and is replaced
// by the secret only inside the TEE, by the agent, with a resource the key
// broker releases to the attested sandbox. The host and the control plane
// see the reference, never the secret.
//
// The form is "sealed." followed by a JWS compact serialisation whose
// payload is the secret's JSON description:
//
//	sealed.<header>.<base64url payload>.<signature>
//
// Only "vault" secrets from the "kbs" provider are supported: the payload
// names a resource (kbs:///repo/type/tag) whose value is the secret. The
// JWS's signature is not checked (Confidential Containers does not sign
// them either): the sealed value's integrity comes from the pod's policy,
// which pins every environment value, so the host cannot swap one sealed
// reference for another.
package sealed

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"

	"cocoon.dev/cocoon/kbs/protocol"
)

// Prefix starts every sealed value.
const Prefix = "sealed."

// Version is the only format version there is.
const Version = "0.1.0"

// MaxLen bounds a sealed value (they are a few hundred bytes).
const MaxLen = 16 << 10

// Secret is a sealed secret's description (the JWS payload).
type Secret struct {
	Version          string            `json:"version"`
	Type             string            `json:"type"`
	Provider         string            `json:"provider"`
	Name             string            `json:"name"`
	ProviderSettings map[string]any    `json:"provider_settings"`
	Annotations      map[string]string `json:"annotations,omitempty"`
}

// Is reports whether v is meant as a sealed secret.
func Is(v string) bool { return strings.HasPrefix(v, Prefix) }

// Parse reads a sealed value. The errors say what is wrong and never
// repeat the value.
func Parse(v string) (*Secret, error) {
	if !Is(v) {
		return nil, errors.New(`a sealed secret starts with "sealed."`)
	}
	if len(v) > MaxLen {
		return nil, fmt.Errorf("a sealed secret of %d bytes; at most %d", len(v), MaxLen)
	}
	parts := strings.Split(strings.TrimPrefix(v, Prefix), ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("a sealed secret is sealed.HEADER.PAYLOAD.SIGNATURE; this one has %d parts after the prefix", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, fmt.Errorf("the sealed secret's payload is not base64url: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var s Secret
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("the sealed secret's payload: %w", err)
	}
	if dec.More() {
		return nil, errors.New("the sealed secret's payload has data after its JSON object")
	}
	if s.Version != Version {
		return nil, fmt.Errorf("sealed secret version %q; this cocoon reads %s", s.Version, Version)
	}
	switch s.Type {
	case "vault":
	case "envelope":
		return nil, errors.New(`envelope sealed secrets (the value encrypted under a key a KMS unwraps) are not supported; seal a reference to a key broker resource instead ("type": "vault", cocoon kbs seal)`)
	default:
		return nil, fmt.Errorf("sealed secret type %q; want vault", s.Type)
	}
	if s.Provider != "kbs" {
		return nil, fmt.Errorf("sealed secret provider %q; cocoon fetches them from the key broker (provider kbs)", s.Provider)
	}
	if _, _, _, err := protocol.ParseURI(s.Name); err != nil {
		return nil, fmt.Errorf("the sealed secret's name: %w", err)
	}
	return &s, nil
}

// Resource is the key broker path (repo, type, tag) of a vault secret.
func (s *Secret) Resource() (repo, typ, tag string) {
	repo, typ, tag, _ = protocol.ParseURI(s.Name)
	return repo, typ, tag
}

// Seal writes the sealed value that stands for the key broker resource
// uri (kbs:///repo/type/tag). The JWS header says it is unsigned.
func Seal(uri string) (string, error) {
	if _, _, _, err := protocol.ParseURI(uri); err != nil {
		return "", err
	}
	payload, err := json.Marshal(Secret{Version: Version, Type: "vault", Provider: "kbs", Name: uri, ProviderSettings: map[string]any{}})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return Prefix + enc([]byte(`{"alg":"none"}`)) + "." + enc(payload) + ".", nil
}

// CheckPath checks a file path inside a sealed secret volume: relative,
// clean, without "..", at most 253 bytes (what Kubernetes allows of a
// Secret item's path).
func CheckPath(p string) error {
	switch {
	case p == "" || len(p) > 253:
		return fmt.Errorf("file path %q must be 1 to 253 bytes", p)
	case path.IsAbs(p) || path.Clean(p) != p || p == "." || strings.HasPrefix(p, "../") || p == "..":
		return fmt.Errorf("file path %q must be relative and clean, without \"..\"", p)
	case strings.ContainsAny(p, "\x00"):
		return fmt.Errorf("file path %q holds a NUL byte", p)
	}
	return nil
}
