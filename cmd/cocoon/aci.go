package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/pod"
)

// An Azure Container Instances ARM template (what `az confcom acipolicygen
// -a` reads) is an input like pod YAML: it is translated to a pod, and the
// policy lives in the template's confidentialComputeProperties.ccePolicy
// (base64), where az confcom writes its own.

type aciFlags struct {
	params []string
}

func (f *aciFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&f.params, "aci-param", nil, "an ARM template parameter, NAME=VALUE (repeatable; else its defaultValue)")
}

func (f *aciFlags) values() (map[string]string, error) {
	m := map[string]string{}
	for _, p := range f.params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--aci-param %q: want NAME=VALUE", p)
		}
		m[k] = v
	}
	return m, nil
}

// translateACI turns a template into pod YAML, with the policy its
// ccePolicy holds as the pod's annotations.
func translateACI(cmd *cobra.Command, file string, data []byte, f *aciFlags) (*pod.ACI, []byte, error) {
	params, err := f.values()
	if err != nil {
		return nil, nil, err
	}
	a, err := pod.FromACI(data, params)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	for _, w := range a.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	y := a.PodYAML
	if a.CCEPolicy != "" {
		text, err := base64.StdEncoding.DecodeString(a.CCEPolicy)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: ccePolicy is not base64: %w", file, err)
		}
		if !bytes.Contains(text, []byte("package cocoon.policy")) {
			return nil, nil, fmt.Errorf("%s: ccePolicy is not a cocoon policy (one from az confcom?): generate cocoon's with `cocoon policy generate %s`", file, file)
		}
		if y, err = annotate(y, text); err != nil {
			return nil, nil, err
		}
	}
	return a, y, nil
}

var ccePolicyRE = regexp.MustCompile(`("ccePolicy"\s*:\s*)"[^"]*"`)

// setCCEPolicy writes the policy (base64) into the template: in place when
// it has a ccePolicy, else into a new confidentialComputeProperties (the
// template is then rewritten with sorted keys).
func setCCEPolicy(data []byte, b64 string) ([]byte, error) {
	switch n := len(ccePolicyRE.FindAllIndex(data, -1)); n {
	case 0:
	case 1:
		return ccePolicyRE.ReplaceAll(data, []byte(`${1}"`+b64+`"`)), nil
	default:
		return nil, fmt.Errorf("the template has %d ccePolicy fields; keep one container group per template", n)
	}
	var t map[string]any
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, err
	}
	for _, r := range t["resources"].([]any) {
		rm, _ := r.(map[string]any)
		if s, _ := rm["type"].(string); strings.EqualFold(s, "Microsoft.ContainerInstance/containerGroups") {
			props, _ := rm["properties"].(map[string]any)
			props["confidentialComputeProperties"] = map[string]any{"ccePolicy": b64}
		}
	}
	out, err := json.MarshalIndent(t, "", "  ")
	return append(out, '\n'), err
}
