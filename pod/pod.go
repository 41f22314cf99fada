// Package pod reads Kubernetes workload YAML (a Pod, or the pod template of
// a Deployment, Job, StatefulSet or DaemonSet), refuses every field cocoon
// does not implement with an error that names it, and translates the rest
// into the agent API's container specs.
package pod

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/volume"
)

// Kind of a container in the pod.
const (
	KindInit    = "init"
	KindSidecar = "sidecar"
	KindMain    = "main"
)

// Container is one container of the pod as the agent will be asked to run it.
type Container struct {
	Kind string                 `json:"kind"`
	Spec *agentv1.ContainerSpec `json:"spec"`
}

// Pod is a validated, translated pod.
type Pod struct {
	Name string
	// Hostname is the pod's hostname; empty for a workload's pod template
	// without spec.hostname (each replica is named by its controller).
	Hostname      string
	RestartPolicy corev1.RestartPolicy
	// Init holds init and sidecar containers in order; Main the rest.
	Init    []Container
	Main    []Container
	Volumes []*agentv1.EmptyDir
	// Encrypted are CSI volumes of the driver volume.cocoon.dev.
	Encrypted []*agentv1.EncryptedVolume
	// Sealed are Secret volumes of sealed secrets.
	Sealed []*agentv1.SealedVolume
	// Sysctls are the pod's securityContext.sysctls.
	Sysctls     map[string]string
	GracePeriod time.Duration
	Annotations map[string]string
	// Warnings lists accepted fields that have no effect here.
	Warnings []string
}

// Images returns the distinct images of the pod, in order of appearance.
func (p *Pod) Images() []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range append(append([]Container{}, p.Init...), p.Main...) {
		if !seen[c.Spec.GetImage()] {
			seen[c.Spec.GetImage()] = true
			out = append(out, c.Spec.GetImage())
		}
	}
	return out
}

// Load reads and parses a workload file.
func Load(path string) (*Pod, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read pod spec: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ErrUnsupported marks a field cocoon does not implement.
var ErrUnsupported = errors.New("not supported")

const maxSpecBytes = 4 << 20

// parseWithSecrets parses a manifest of one workload and the Secrets its
// sealed references come from (env secretKeyRef, Secret volumes), as
// `cocoon run` takes the manifest `cocoon policy generate` annotated.
func parseWithSecrets(data []byte, opts Options) (*Pod, error) {
	docs, err := Documents(data)
	if err != nil {
		return nil, err
	}
	var workload *Document
	for i := range docs {
		d := &docs[i]
		switch {
		case d.Kind == "Secret" && d.APIVersion == "v1":
		case d.Workload() && workload == nil:
			workload = d
		default:
			return nil, fmt.Errorf("expected one workload (and the Secrets it reads), found %d documents with %s %s; put each workload in its own file", len(docs), d.APIVersion, d.Kind)
		}
	}
	if workload == nil {
		return nil, fmt.Errorf("the manifest's %d documents hold no workload (Pod, Deployment, …)", len(docs))
	}
	secrets, err := SecretsOf(docs)
	if err != nil {
		return nil, err
	}
	for name, kv := range opts.Secrets {
		if _, ok := secrets[name]; !ok {
			secrets[name] = kv
		}
	}
	opts.Secrets = secrets
	return ParseWith(workload.Text, opts)
}

// Parse parses a workload YAML or JSON document, with the default Options.
func Parse(data []byte) (*Pod, error) { return ParseWith(data, Options{}) }

// ParseWith parses a workload YAML or JSON document.
func ParseWith(data []byte, opts Options) (*Pod, error) {
	if len(data) > maxSpecBytes {
		return nil, fmt.Errorf("pod spec is %d bytes; at most %d are accepted", len(data), maxSpecBytes)
	}
	if docs := splitDocs(data); len(docs) != 1 {
		return parseWithSecrets(data, opts)
	}
	js, err := yaml.YAMLToJSONStrict(data) // duplicate keys are refused, as kubectl does
	if err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	var head struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Metadata   json.RawMessage `json:"metadata"`
		Spec       json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return nil, fmt.Errorf("parse workload: %w", err)
	}
	var podJSON []byte
	var prefix string
	switch {
	case head.Kind == "Pod" && head.APIVersion == "v1":
		podJSON, prefix = js, ""
	case (head.Kind == "Deployment" || head.Kind == "StatefulSet" || head.Kind == "DaemonSet" || head.Kind == "ReplicaSet") && head.APIVersion == "apps/v1",
		head.Kind == "Job" && head.APIVersion == "batch/v1":
		var outer struct {
			Metadata json.RawMessage `json:"metadata"`
			Spec     struct {
				Template json.RawMessage `json:"template"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(js, &outer); err != nil {
			return nil, fmt.Errorf("parse %s: %w", head.Kind, err)
		}
		if len(outer.Spec.Template) == 0 {
			return nil, fmt.Errorf("%s has no spec.template", head.Kind)
		}
		// Give the template the workload's name when it has none.
		var tmpl map[string]any
		if err := json.Unmarshal(outer.Spec.Template, &tmpl); err != nil {
			return nil, fmt.Errorf("parse %s spec.template: %w", head.Kind, err)
		}
		var om corev1.Pod
		_ = json.Unmarshal(js, &om)
		md, _ := tmpl["metadata"].(map[string]any)
		if md == nil {
			md = map[string]any{}
		}
		if md["name"] == nil && om.Name != "" {
			md["name"] = om.Name
		}
		tmpl["metadata"] = md
		tmpl["apiVersion"], tmpl["kind"] = "v1", "Pod"
		podJSON, _ = json.Marshal(tmpl)
		prefix = "spec.template."
	case head.Kind == "":
		return nil, errors.New("the document has no kind; expected a Pod, Deployment, Job, StatefulSet or DaemonSet")
	default:
		return nil, fmt.Errorf("kind %s (apiVersion %s) is not supported; use a Pod (v1), Deployment, StatefulSet, DaemonSet (apps/v1) or Job (batch/v1)", head.Kind, head.APIVersion)
	}
	var k corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(podJSON))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		return nil, fmt.Errorf("decode %s: %w", strings.TrimSuffix(prefix, ".")+" pod", err)
	}
	var generic map[string]any
	if err := json.Unmarshal(podJSON, &generic); err != nil {
		return nil, err
	}
	p := &Pod{}
	if err := checkFields(generic["spec"], "spec", prefix+"spec", allowedPaths(), &p.Warnings); err != nil {
		return nil, err
	}
	p.Warnings = append(p.Warnings, kubeletAdditions(&k.Spec, prefix)...)
	return p, translate(p, &k, prefix, opts)
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case float64:
		return x == 0
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// checkFields walks v (decoded JSON) and fails on the first set field whose
// pattern is not allowed. pattern uses "[]" for indices; display has them.
func checkFields(v any, pattern, display string, allowed map[string]bool, warnings *[]string) error {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if isZero(x[k]) {
				continue
			}
			cp, cd := pattern+"."+k, display+"."+k
			switch {
			case allowed[cp]:
			case ignoredPaths[cp] != "":
				*warnings = append(*warnings, fmt.Sprintf("%s is ignored (%s has no meaning for a single sandbox)", cd, ignoredPaths[cp]))
			case hasPrefix(allowed, cp):
				if err := checkFields(x[k], cp, cd, allowed, warnings); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%s is %w by cocoon; remove it from the pod spec", cd, ErrUnsupported)
			}
		}
	case []any:
		for i, e := range x {
			if err := checkFields(e, pattern+"[]", display+"["+strconv.Itoa(i)+"]", allowed, warnings); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%s is %w by cocoon; remove it from the pod spec", display, ErrUnsupported)
	}
	return nil
}

func hasPrefix(allowed map[string]bool, p string) bool {
	for a := range allowed {
		if strings.HasPrefix(a, p+".") || strings.HasPrefix(a, p+"[]") {
			return true
		}
	}
	return false
}

func randSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])[:5]
}

// ResolveLocal makes the paths of oci: and docker-archive: images and of
// encrypted volume sources absolute, relative to base (the directory of the
// pod file); URLs stay as they are.
func (p *Pod) ResolveLocal(base string) {
	for _, v := range p.Encrypted {
		if base != "" && v.Source != "" && !strings.HasPrefix(v.Source, "/") && !volume.IsURL(v.Source) {
			v.Source = filepath.Join(base, v.Source)
		}
	}
	for _, cs := range [][]Container{p.Init, p.Main} {
		for _, c := range cs {
			for _, t := range []string{"oci:", "docker-archive:"} {
				if rest, ok := strings.CutPrefix(c.Spec.Image, t); ok && !strings.HasPrefix(rest, "/") && base != "" {
					c.Spec.Image = t + filepath.Join(base, rest)
				}
			}
		}
	}
}

// kubeletAdditions warns of what kubelet adds to a pod under Kubernetes
// (spec.runtimeClassName set) that the sandbox refuses or that the policy
// must admit: the service account token (a projected volume from the host)
// and the service-link variables.
func kubeletAdditions(s *corev1.PodSpec, prefix string) []string {
	if s.RuntimeClassName == nil {
		return nil
	}
	var w []string
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		w = append(w, prefix+"spec.automountServiceAccountToken: set it to false: kubelet would mount the service account token from the host, and a cocoon sandbox mounts no host files (the container would be refused)")
	}
	if s.EnableServiceLinks == nil || *s.EnableServiceLinks {
		w = append(w, prefix+"spec.enableServiceLinks: set it to false: kubelet would add a variable per service of the namespace, which the policy admits only through the settings' env_patterns")
	}
	return w
}
