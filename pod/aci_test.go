package pod

import (
	"os"
	"strings"
	"testing"
)

// TestACITemplate: a container group template (the shape `az confcom
// acipolicygen -a` reads) becomes a pod: parameters and variables resolved,
// the SKR sidecar replaced by cocoon's SKR API, the rest as Kubernetes
// would say it; the pod then passes cocoon's own checks.
func TestACITemplate(t *testing.T) {
	data, err := os.ReadFile("testdata/aci/skr-app.json")
	if err != nil {
		t.Fatal(err)
	}
	if !IsACITemplate(data) {
		t.Fatal("not recognised as an ACI template")
	}
	a, err := FromACI(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(a.PodYAML)
	if err != nil {
		t.Fatalf("the translated pod does not parse: %v\n%s", err, a.PodYAML)
	}
	if p.Name != "payments-app" || p.Annotations["cocoon.dev/skr"] != "true" || len(p.Main) != 1 {
		t.Fatalf("pod %s annotations %v containers %d\n%s", p.Name, p.Annotations, len(p.Main), a.PodYAML)
	}
	c := p.Main[0].Spec
	if c.GetImage() != "registry.example/payments@sha256:"+strings.Repeat("1", 64) || strings.Join(c.GetCommand(), " ") != "/bin/app --key payments-key" {
		t.Errorf("container %v %v", c.GetImage(), c.GetCommand())
	}
	env := map[string]string{}
	for _, e := range c.GetEnv() {
		env[e.GetName()] = e.GetValue()
	}
	if env["MODE"] != "prod" || env["API_TOKEN"] != "not-a-secret" {
		t.Errorf("env %v", env)
	}
	w := strings.Join(a.Warnings, "\n")
	for _, want := range []string{"Azure SKR sidecar", "secureValue", "ipAddress"} {
		if !strings.Contains(w, want) {
			t.Errorf("no warning about %s:\n%s", want, w)
		}
	}
	// A parameter given on the command line wins over its default.
	b, err := FromACI(data, map[string]string{"groupName": "other"})
	if err != nil || !strings.Contains(string(b.PodYAML), "name: other") {
		t.Errorf("parameter: %v\n%s", err, b.PodYAML)
	}
}

func TestACIRefusals(t *testing.T) {
	base, _ := os.ReadFile("testdata/aci/skr-app.json")
	cases := []struct{ name, old, new, want string }{
		{"azure file", `{"name": "scratch", "emptyDir": {}}`, `{"name": "scratch", "azureFile": {"shareName": "s"}}`, "Azure Files"},
		{"secret volume", `{"name": "scratch", "emptyDir": {}}`, `{"name": "scratch", "secret": {}}`, "key broker"},
		{"unknown property", `"ports": [{"port": 8443, "protocol": "TCP"}]`, `"ports": [{"port": 8443}], "gpuMode": "x"`, "gpuMode"},
		{"expression", `"[variables('kid')]"`, `"[concat('a','b')]"`, "only [parameters"},
		{"windows", `"osType": "Linux"`, `"osType": "Windows"`, "only Linux"},
		{"undeclared parameter", `"[parameters('appImage')]"`, `"[parameters('nope')]"`, "not declared"},
		{"encfs sidecar", `"mcr.microsoft.com/aci/skr:2.12"`, `"mcr.microsoft.com/aci/encfs:2.12"`, "encrypted-filesystem sidecar"},
		{"inline seccomp", `"volumeMounts"`, `"securityContext": {"seccompProfile": "e30="}, "volumeMounts"`, "seccompProfile"},
	}
	for _, tc := range cases {
		data := strings.Replace(string(base), tc.old, tc.new, 1)
		if data == string(base) {
			t.Fatalf("%s: the test did not change the template", tc.name)
		}
		if _, err := FromACI([]byte(data), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if IsACITemplate([]byte("apiVersion: v1\nkind: Pod\n")) {
		t.Error("a pod YAML taken for a template")
	}
}

func FuzzACI(f *testing.F) {
	base, _ := os.ReadFile("testdata/aci/skr-app.json")
	f.Add(base)
	f.Add([]byte(`{"resources":[{"type":"Microsoft.ContainerInstance/containerGroups","name":"x","properties":{"containers":[{"name":"a","properties":{"image":"i"}}]}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := FromACI(b, nil)
		if err != nil {
			return
		}
		_, _ = Parse(a.PodYAML)
	})
}
