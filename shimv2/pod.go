package shimv2

import (
	"encoding/base64"
	"fmt"
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
	return p, pol, nil
}
