package pod

import (
	"encoding/base64"
	"encoding/json"
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

// TestACIEncfs: the encrypted-filesystem sidecar's configuration becomes an
// encrypted volume with the sidecar's key derivation, mounted where the
// app looked for it; no privileged sidecar is left.
func TestACIEncfs(t *testing.T) {
	data, err := os.ReadFile("testdata/aci/encfs-app.json")
	if err != nil {
		t.Fatal(err)
	}
	a, err := FromACI(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(a.PodYAML)
	if err != nil {
		t.Fatalf("%v\n%s", err, a.PodYAML)
	}
	if len(p.Main) != 1 || len(p.Encrypted) != 1 {
		t.Fatalf("containers %d, encrypted volumes %d\n%s", len(p.Main), len(p.Encrypted), a.PodYAML)
	}
	ev := p.Encrypted[0]
	if ev.GetSource() != "https://acct.blob.core.windows.net/c/fs.img?sv=sig" || ev.GetKeyUri() != "kbs:///keyvault/keys/fs-key?kdf=azure-encfs&label=Volume+Key&salt=00aabb" || !ev.GetReadOnly() {
		t.Errorf("volume %v", ev)
	}
	mounted := false
	for _, m := range p.Main[0].Spec.GetMounts() {
		mounted = mounted || (m.GetMountPath() == "/mnt/remote/share" && m.GetReadOnly())
	}
	if !mounted {
		t.Errorf("the app does not mount the filesystem at /mnt/remote/share: %v", p.Main[0].Spec.GetMounts())
	}
	// Refusals, each a change of the sidecar's configuration.
	args := func(mod func(fs map[string]any)) []byte {
		fs := map[string]any{"mount_point": "/mnt/remote/share", "azure_url": "https://a.example/fs.img", "read_write": false,
			"key":            map[string]any{"kid": "fs-key", "kty": "RSA", "authority": map[string]any{"endpoint": "m"}, "akv": map[string]any{"endpoint": "v"}},
			"key_derivation": map[string]any{"salt": "00", "label": "l"}}
		mod(fs)
		b, _ := json.Marshal(map[string]any{"azure_filesystems": []any{fs}})
		var t map[string]any
		json.Unmarshal(data, &t)
		c := t["resources"].([]any)[0].(map[string]any)["properties"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		c["properties"].(map[string]any)["environmentVariables"] = []any{map[string]any{"name": "EncfsSideCarArgs", "value": base64.StdEncoding.EncodeToString(b)}}
		out, _ := json.Marshal(t)
		return out
	}
	if _, err := FromACI(args(func(map[string]any) {}), nil); err != nil {
		t.Fatalf("the unchanged configuration: %v", err)
	}
	for name, tc := range map[string]struct {
		mod  func(fs map[string]any)
		want string
	}{
		"read-write":      {func(fs map[string]any) { fs["read_write"] = true }, "read-only"},
		"private blob":    {func(fs map[string]any) { fs["azure_url_private"] = true }, "managed identity"},
		"raw key":         {func(fs map[string]any) { fs["raw_key"] = "00" }, "raw_key"},
		"not a URL":       {func(fs map[string]any) { fs["azure_url"] = "/local/fs.img" }, "azure_url"},
		"bad salt":        {func(fs map[string]any) { fs["key_derivation"] = map[string]any{"salt": "zz"} }, "salt"},
		"ec key":          {func(fs map[string]any) { fs["key"].(map[string]any)["kty"] = "EC" }, "kty"},
		"bad kid":         {func(fs map[string]any) { fs["key"].(map[string]any)["kid"] = "../x" }, "kid"},
		"unknown field":   {func(fs map[string]any) { fs["extra"] = 1 }, "unknown field"},
		"nobody mounts":   {func(fs map[string]any) { fs["mount_point"] = "/elsewhere/share" }, "no container mounts"},
		"unclean mountpt": {func(fs map[string]any) { fs["mount_point"] = "/mnt/remote/../share" }, "mount_point"},
	} {
		if _, err := FromACI(args(tc.mod), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
