package shimv2

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/sandbox"
)

// errNoPolicy explains how a policy reaches a pod under Kubernetes.
var errNoPolicy = fmt.Errorf("the pod has no %s annotation: generate one with `cocoon policy generate` "+
	"(it writes the annotation into the pod), and let containerd pass it to the runtime "+
	"(pod_annotations = [\"cocoon.dev/*\"] in the runtime's section; `cocoon install containerd` writes it)", sandbox.PolicyAnnotation)

// podFromPolicy is the sandbox a pod's policy annotation describes: under
// the CRI the runtime never sees the pod spec, and needs none. The sandbox
// is created with the name, hostname and volumes the policy pins (the
// agent would refuse any other), and its HOST_DATA is the policy's hash.
func podFromPolicy(annotation string) (*pod.Pod, *policy.Policy, error) {
	if annotation == "" {
		return nil, nil, errNoPolicy
	}
	text, err := base64.StdEncoding.DecodeString(annotation)
	if err != nil {
		return nil, nil, fmt.Errorf("annotation %s is not base64: %w", sandbox.PolicyAnnotation, err)
	}
	pol, err := policy.Parse(text)
	if err != nil {
		return nil, nil, fmt.Errorf("annotation %s: %w", sandbox.PolicyAnnotation, err)
	}
	p := &pod.Pod{
		Name: pol.Sandbox.Name, Hostname: pol.Sandbox.Hostname, GracePeriod: 30 * time.Second,
		Annotations: map[string]string{sandbox.PolicyAnnotation: annotation},
	}
	for _, v := range pol.Sandbox.Volumes {
		p.Volumes = append(p.Volumes, &agentv1.EmptyDir{Name: v.Name, SizeLimitBytes: v.SizeLimitBytes})
	}
	for _, v := range pol.Sandbox.EncryptedVolumes {
		p.Encrypted = append(p.Encrypted, &agentv1.EncryptedVolume{Name: v.Name, Source: v.Source, KeyUri: v.Key, ReadOnly: v.ReadOnly})
	}
	for _, v := range pol.Sandbox.SealedVolumes {
		sv := &agentv1.SealedVolume{Name: v.Name}
		for _, f := range v.Files {
			sv.Files = append(sv.Files, &agentv1.SealedFile{Path: f.Path, Value: f.Value, Mode: f.Mode})
		}
		p.Sealed = append(p.Sealed, sv)
	}
	return p, pol, nil
}

// readPolicyFile reads a policy file (the runtime's default policy).
func readPolicyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the runtime's default_policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, policy.MaxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("the runtime's default_policy: %w", err)
	}
	if len(b) > policy.MaxPolicyBytes {
		return nil, fmt.Errorf("the runtime's default_policy %s is larger than %d bytes", path, policy.MaxPolicyBytes)
	}
	return b, nil
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// dnsLabel is name as the agent accepts a name (a DNS label): itself when
// it is one, else a readable prefix and a hash of it. Only sandboxes under
// an allow-all policy take names from the CRI (a policy names its own).
func dnsLabel(name string) string {
	if dnsLabelRE.MatchString(name) {
		return name
	}
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:6])
	if prefix := strings.Trim(b.String(), "-"); prefix != "" {
		return prefix + "-" + h
	}
	return h
}
