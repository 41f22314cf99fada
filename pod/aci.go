package pod

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// An Azure Container Instances container group, as an ARM deployment
// template (the input of `az confcom acipolicygen -a`), is translated to a
// Kubernetes Pod, which the rest of cocoon then treats as any pod: the same
// checks, the same policy. Fields cocoon cannot honour are named, as for pod
// YAML. The Azure SKR sidecar container is replaced by cocoon's own SKR API
// (annotation cocoon.dev/skr), which needs no privileged container. The
// resource's tags named cocoon.dev/... become the pod's annotations (the key
// broker to pin, the attestation service, ...).

// IsACITemplate reports whether data is an ARM deployment template with a
// container group.
func IsACITemplate(data []byte) bool {
	t := bytes.TrimSpace(data)
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	var head struct {
		Resources []struct {
			Type string `json:"type"`
		} `json:"resources"`
	}
	if json.Unmarshal(t, &head) != nil {
		return false
	}
	for _, r := range head.Resources {
		if strings.EqualFold(r.Type, aciType) {
			return true
		}
	}
	return false
}

const aciType = "Microsoft.ContainerInstance/containerGroups"

// ACI is a translated container group.
type ACI struct {
	// PodYAML is the Kubernetes Pod the group becomes.
	PodYAML []byte
	// CCEPolicy is the template's confidentialComputeProperties.ccePolicy
	// (base64), where cocoon keeps the group's policy.
	CCEPolicy string
	// Warnings name what was ignored.
	Warnings []string
}

var armExpr = regexp.MustCompile(`^\[(parameters|variables)\('([^']+)'\)\]$`)

type armTemplate struct {
	Parameters map[string]struct {
		DefaultValue any `json:"defaultValue"`
	} `json:"parameters"`
	Variables map[string]any   `json:"variables"`
	Resources []map[string]any `json:"resources"`
}

// FromACI translates the container group of an ARM template. params give
// values to the template's parameters (else their defaultValue).
func FromACI(data []byte, params map[string]string) (*ACI, error) {
	if len(data) > maxSpecBytes {
		return nil, fmt.Errorf("template is %d bytes; at most %d are accepted", len(data), maxSpecBytes)
	}
	var t armTemplate
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("parse ARM template: %w", err)
	}
	var groups []map[string]any
	for _, r := range t.Resources {
		if s, _ := r["type"].(string); strings.EqualFold(s, aciType) {
			groups = append(groups, r)
		}
	}
	if len(groups) != 1 {
		return nil, fmt.Errorf("the template has %d container groups (%s); put each in its own template", len(groups), aciType)
	}
	x := &aciTranslator{t: &t, params: params}
	return x.group(groups[0])
}

type aciTranslator struct {
	t            *armTemplate
	params       map[string]string
	warnings     []string
	encfsVolumes []encfsVolume
}

// str resolves a string field: a literal or [parameters('x')] /
// [variables('x')]; other ARM expressions are refused, naming the field.
func (x *aciTranslator) str(v any, field string) (string, error) {
	s, ok := v.(string)
	if !ok {
		if v == nil {
			return "", nil
		}
		if f, ok := v.(float64); ok {
			return strconv.FormatFloat(f, 'f', -1, 64), nil
		}
		return "", fmt.Errorf("%s: want a string, found %T", field, v)
	}
	m := armExpr.FindStringSubmatch(s)
	if m == nil {
		if strings.HasPrefix(s, "[") && !strings.HasPrefix(s, "[[") {
			return "", fmt.Errorf("%s = %q: only [parameters('name')] and [variables('name')] expressions are evaluated; give the value itself", field, s)
		}
		return strings.Replace(s, "[[", "[", 1), nil
	}
	switch m[1] {
	case "parameters":
		if v, ok := x.params[m[2]]; ok {
			return v, nil
		}
		p, ok := x.t.Parameters[m[2]]
		if !ok {
			return "", fmt.Errorf("%s: parameter %q is not declared", field, m[2])
		}
		if p.DefaultValue == nil {
			return "", fmt.Errorf("%s: parameter %q has no defaultValue; give it with --aci-param %s=VALUE", field, m[2], m[2])
		}
		return x.str(p.DefaultValue, field)
	default:
		v, ok := x.t.Variables[m[2]]
		if !ok {
			return "", fmt.Errorf("%s: variable %q is not declared", field, m[2])
		}
		return x.str(v, field)
	}
}

func (x *aciTranslator) warn(format string, args ...any) {
	x.warnings = append(x.warnings, fmt.Sprintf(format, args...))
}

// known checks that m has only the keys given (the rest are named).
func known(m map[string]any, field string, keys ...string) error {
	allowed := map[string]bool{}
	for _, k := range keys {
		allowed[k] = true
	}
	var bad []string
	for k := range m {
		if !allowed[k] {
			bad = append(bad, field+"."+k)
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		return fmt.Errorf("%s: not supported in a confidential container group here (cocoon would not honour them): %s", field, strings.Join(bad, ", "))
	}
	return nil
}

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

func list(v any) []any { l, _ := v.([]any); return l }

func (x *aciTranslator) group(g map[string]any) (*ACI, error) {
	name, err := x.str(g["name"], "name")
	if err != nil {
		return nil, err
	}
	k := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: aciName(name), Annotations: map[string]string{}}}
	for key := range g {
		switch key {
		case "type", "apiVersion", "name", "properties", "location", "dependsOn", "comments":
		case "tags":
			// cocoon's annotations (the key broker, the attestation
			// service, ...) ride as the resource's tags.
			for tk, tv := range obj(g["tags"]) {
				if strings.HasPrefix(tk, "cocoon.dev/") {
					s, err := x.str(tv, "tags."+tk)
					if err != nil {
						return nil, err
					}
					k.Annotations[tk] = s
				}
			}
		case "identity":
			x.warn("identity: ignored (cocoon's key broker authenticates the TEE by attestation, not by a managed identity)")
		case "zones":
			x.warn("zones: ignored")
		default:
			return nil, fmt.Errorf("resource field %q is not supported", key)
		}
	}
	props := obj(g["properties"])
	if props == nil {
		return nil, errors.New("the container group has no properties")
	}
	out := &ACI{}
	for key, v := range props {
		switch key {
		case "containers", "initContainers", "volumes", "restartPolicy":
		case "osType":
			if s, _ := v.(string); !strings.EqualFold(s, "Linux") {
				return nil, fmt.Errorf("osType %v: only Linux container groups run in cocoon", v)
			}
		case "sku":
			if s, _ := v.(string); !strings.EqualFold(s, "Confidential") {
				x.warn("sku %v: cocoon runs every group confidential", v)
			}
		case "confidentialComputeProperties":
			cc := obj(v)
			if err := known(cc, "properties.confidentialComputeProperties", "ccePolicy"); err != nil {
				return nil, err
			}
			out.CCEPolicy, _ = cc["ccePolicy"].(string)
		case "ipAddress":
			x.warn("ipAddress: the group's address and published ports are the network's business (a Kubernetes Service, a load balancer); not translated")
		case "imageRegistryCredentials":
			x.warn("imageRegistryCredentials: ignored; give registry credentials with cocoon's registry configuration")
		case "diagnostics", "subnetIds", "priority", "encryptionProperties":
			x.warn("%s: ignored", key)
		default:
			return nil, fmt.Errorf("properties.%s is not supported", key)
		}
	}
	switch rp, _ := props["restartPolicy"].(string); strings.ToLower(rp) {
	case "", "always":
		k.Spec.RestartPolicy = corev1.RestartPolicyAlways
	case "never":
		k.Spec.RestartPolicy = corev1.RestartPolicyNever
	case "onfailure":
		k.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	default:
		return nil, fmt.Errorf("restartPolicy %q: Always, Never or OnFailure", rp)
	}
	for i, v := range list(props["volumes"]) {
		vol, err := x.volume(obj(v), fmt.Sprintf("properties.volumes[%d]", i))
		if err != nil {
			return nil, err
		}
		k.Spec.Volumes = append(k.Spec.Volumes, vol)
	}
	for i, c := range list(props["initContainers"]) {
		kc, _, err := x.container(obj(c), fmt.Sprintf("properties.initContainers[%d]", i))
		if err != nil {
			return nil, err
		}
		k.Spec.InitContainers = append(k.Spec.InitContainers, kc)
	}
	for i, c := range list(props["containers"]) {
		kc, skr, err := x.container(obj(c), fmt.Sprintf("properties.containers[%d]", i))
		if err != nil {
			return nil, err
		}
		if skr == "encfs" {
			continue
		}
		if skr != "" {
			k.Annotations["cocoon.dev/skr"] = skr
			continue
		}
		k.Spec.Containers = append(k.Spec.Containers, kc)
	}
	if len(k.Spec.Containers) == 0 {
		return nil, errors.New("the container group has no containers")
	}
	if err := x.placeEncfs(k); err != nil {
		return nil, err
	}
	if len(k.Annotations) == 0 {
		k.Annotations = nil
	}
	y, err := yaml.Marshal(k)
	if err != nil {
		return nil, err
	}
	out.PodYAML, out.Warnings = y, x.warnings
	return out, nil
}

// aciName makes a group name a DNS label (ACI allows upper case).
func aciName(s string) string {
	return strings.ToLower(s)
}

func (x *aciTranslator) volume(v map[string]any, field string) (corev1.Volume, error) {
	name, err := x.str(v["name"], field+".name")
	if err != nil {
		return corev1.Volume{}, err
	}
	vol := corev1.Volume{Name: name}
	for key := range v {
		switch key {
		case "name":
		case "emptyDir":
			vol.EmptyDir = &corev1.EmptyDirVolumeSource{}
		case "secret":
			return vol, fmt.Errorf("%s.secret: secret volumes are the host's files; give secrets through the key broker (cocoon kbs put, /cdh/resource or /key/release)", field)
		case "azureFile":
			return vol, fmt.Errorf("%s.azureFile: an Azure Files share is storage the host reads; use a cocoon encrypted volume (docs/volumes.md)", field)
		case "gitRepo":
			return vol, fmt.Errorf("%s.gitRepo: a repository the host clones is not pinned by the policy; build it into an image", field)
		default:
			return vol, fmt.Errorf("%s.%s is not supported", field, key)
		}
	}
	if vol.EmptyDir == nil {
		return vol, fmt.Errorf("%s: only emptyDir volumes are translated", field)
	}
	return vol, nil
}

// skrImage is the Azure SKR sidecar's image.
var skrImage = regexp.MustCompile(`^mcr\.microsoft\.com/aci/skr(:|@|$)`)

// container translates one container; for the SKR sidecar it returns the
// port cocoon's own SKR API should take instead, for the encrypted-filesystem
// sidecar "encfs" (its filesystems become encrypted volumes).
func (x *aciTranslator) container(c map[string]any, field string) (corev1.Container, string, error) {
	if err := known(c, field, "name", "properties"); err != nil {
		return corev1.Container{}, "", err
	}
	name, err := x.str(c["name"], field+".name")
	if err != nil {
		return corev1.Container{}, "", err
	}
	p := obj(c["properties"])
	field += ".properties"
	if err := known(p, field, "image", "command", "environmentVariables", "ports", "resources", "volumeMounts", "securityContext", "livenessProbe", "readinessProbe"); err != nil {
		return corev1.Container{}, "", err
	}
	image, err := x.str(p["image"], field+".image")
	if err != nil {
		return corev1.Container{}, "", err
	}
	kc := corev1.Container{Name: name, Image: image}
	for i, a := range list(p["command"]) {
		s, err := x.str(a, fmt.Sprintf("%s.command[%d]", field, i))
		if err != nil {
			return kc, "", err
		}
		kc.Command = append(kc.Command, s)
	}
	for i, e := range list(p["environmentVariables"]) {
		em := obj(e)
		f := fmt.Sprintf("%s.environmentVariables[%d]", field, i)
		if err := known(em, f, "name", "value", "secureValue"); err != nil {
			return kc, "", err
		}
		n, err := x.str(em["name"], f+".name")
		if err != nil {
			return kc, "", err
		}
		val := em["value"]
		if sv, ok := em["secureValue"]; ok {
			x.warn("%s (%s): secureValue is pinned by the policy like any value and visible to whoever holds the template; keep secrets in the key broker", f, n)
			val = sv
		}
		s, err := x.str(val, f+".value")
		if err != nil {
			return kc, "", err
		}
		kc.Env = append(kc.Env, corev1.EnvVar{Name: n, Value: s})
	}
	if skrImage.MatchString(image) {
		port := "8080"
		for _, e := range kc.Env {
			if e.Name == "Port" && e.Value != "" {
				port = e.Value
			}
		}
		x.warn("container %s is the Azure SKR sidecar: replaced by cocoon's own SKR API on 127.0.0.1:%s (annotation cocoon.dev/skr); no sidecar runs", name, port)
		if port == "8080" {
			port = "true"
		}
		return kc, port, nil
	}
	if encfsImage.MatchString(image) {
		return kc, "encfs", x.encfs(name, kc.Env)
	}
	for i, pt := range list(p["ports"]) {
		pm := obj(pt)
		f := fmt.Sprintf("%s.ports[%d]", field, i)
		if err := known(pm, f, "port", "protocol"); err != nil {
			return kc, "", err
		}
		n, _ := pm["port"].(float64)
		if n < 1 || n > 65535 || n != math.Trunc(n) {
			return kc, "", fmt.Errorf("%s.port %v: want 1-65535", f, pm["port"])
		}
		proto := corev1.ProtocolTCP
		if s, _ := pm["protocol"].(string); strings.EqualFold(s, "udp") {
			proto = corev1.ProtocolUDP
		}
		kc.Ports = append(kc.Ports, corev1.ContainerPort{ContainerPort: int32(n), Protocol: proto})
	}
	if r := obj(p["resources"]); r != nil {
		if err := known(r, field+".resources", "requests", "limits"); err != nil {
			return kc, "", err
		}
		for key, dst := range map[string]*corev1.ResourceList{"requests": &kc.Resources.Requests, "limits": &kc.Resources.Limits} {
			rm := obj(r[key])
			if rm == nil {
				continue
			}
			f := field + ".resources." + key
			if err := known(rm, f, "cpu", "memoryInGB", "gpu"); err != nil {
				return kc, "", err
			}
			if rm["gpu"] != nil {
				return kc, "", fmt.Errorf("%s.gpu: GPUs are not attested by cocoon", f)
			}
			*dst = corev1.ResourceList{}
			if cpu, ok := rm["cpu"].(float64); ok {
				(*dst)[corev1.ResourceCPU] = *resource.NewMilliQuantity(int64(math.Round(cpu*1000)), resource.DecimalSI)
			}
			if mem, ok := rm["memoryInGB"].(float64); ok {
				(*dst)[corev1.ResourceMemory] = *resource.NewQuantity(int64(math.Round(mem*1024))*1024*1024, resource.BinarySI)
			}
		}
	}
	for i, m := range list(p["volumeMounts"]) {
		mm := obj(m)
		f := fmt.Sprintf("%s.volumeMounts[%d]", field, i)
		if err := known(mm, f, "name", "mountPath", "readOnly"); err != nil {
			return kc, "", err
		}
		n, err := x.str(mm["name"], f+".name")
		if err != nil {
			return kc, "", err
		}
		mp, err := x.str(mm["mountPath"], f+".mountPath")
		if err != nil {
			return kc, "", err
		}
		ro, _ := mm["readOnly"].(bool)
		kc.VolumeMounts = append(kc.VolumeMounts, corev1.VolumeMount{Name: n, MountPath: mp, ReadOnly: ro})
	}
	if sc := obj(p["securityContext"]); sc != nil {
		if err := x.securityContext(sc, field+".securityContext", &kc); err != nil {
			return kc, "", err
		}
	}
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if p[probe] != nil {
			x.warn("%s.%s: probes are the host's to run; not translated", field, probe)
		}
	}
	return kc, "", nil
}

func (x *aciTranslator) securityContext(sc map[string]any, field string, kc *corev1.Container) error {
	if err := known(sc, field, "privileged", "allowPrivilegeEscalation", "runAsUser", "runAsGroup", "capabilities", "seccompProfile"); err != nil {
		return err
	}
	k := &corev1.SecurityContext{}
	if v, ok := sc["privileged"].(bool); ok {
		k.Privileged = &v
	}
	if v, ok := sc["allowPrivilegeEscalation"].(bool); ok {
		k.AllowPrivilegeEscalation = &v
	}
	for key, dst := range map[string]**int64{"runAsUser": &k.RunAsUser, "runAsGroup": &k.RunAsGroup} {
		if v, ok := sc[key].(float64); ok {
			n := int64(v)
			*dst = &n
		}
	}
	if c := obj(sc["capabilities"]); c != nil {
		if err := known(c, field+".capabilities", "add", "drop"); err != nil {
			return err
		}
		k.Capabilities = &corev1.Capabilities{}
		for _, a := range list(c["add"]) {
			s, _ := a.(string)
			k.Capabilities.Add = append(k.Capabilities.Add, corev1.Capability(s))
		}
		for _, d := range list(c["drop"]) {
			s, _ := d.(string)
			k.Capabilities.Drop = append(k.Capabilities.Drop, corev1.Capability(s))
		}
	}
	if s, ok := sc["seccompProfile"].(string); ok && s != "" {
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			return fmt.Errorf("%s.seccompProfile: not base64: %w", field, err)
		}
		return fmt.Errorf("%s.seccompProfile: an inline ACI seccomp profile is not translated yet; use a Kubernetes pod with seccompProfile Localhost or RuntimeDefault", field)
	}
	kc.SecurityContext = k
	return nil
}
