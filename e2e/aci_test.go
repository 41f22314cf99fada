package e2e

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestACITemplateRuns: an Azure Container Instances ARM template — a group
// with the SKR sidecar and an app that calls it — gets its policy in its
// ccePolicy and runs; the sidecar is cocoon's own SKR API. Changing the
// template after its policy was made (another command) is refused at run.
func TestACITemplateRuns(t *testing.T) {
	x := newH(t)
	tmpl := `{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {"name": {"type": "String", "defaultValue": "aci-demo"}},
  "resources": [{
    "type": "Microsoft.ContainerInstance/containerGroups",
    "apiVersion": "2023-05-01",
    "name": "[parameters('name')]",
    "location": "[resourceGroup().location]",
    "properties": {
      "confidentialComputeProperties": {"ccePolicy": ""},
      "sku": "Confidential",
      "osType": "Linux",
      "restartPolicy": "Never",
      "containers": [
        {"name": "skr-sidecar-container", "properties": {"image": "mcr.microsoft.com/aci/skr:2.12", "command": ["/skr.sh"],
          "resources": {"requests": {"cpu": 1, "memoryInGB": 2}}, "ports": [{"port": 8080}]}},
        {"name": "app", "properties": {"image": "` + env.busybox + `",
          "command": ["sh", "-c", "echo status=$(wget -qO- http://localhost:8080/status); echo mode=$MODE"],
          "environmentVariables": [{"name": "MODE", "value": "aci"}],
          "resources": {"requests": {"cpu": 0.5, "memoryInGB": 0.5}}}}
      ]
    }
  }]
}
`
	file := filepath.Join(t.TempDir(), "template.json")
	os.WriteFile(file, []byte(tmpl), 0o644)
	_, errs := x.mustRun(0, "policy", "generate", file)
	if !strings.Contains(errs, "Azure SKR sidecar") {
		t.Errorf("no warning that the sidecar is replaced: %s", errs)
	}
	b, _ := os.ReadFile(file)
	i := strings.Index(string(b), `"ccePolicy": "`)
	if i < 0 {
		t.Fatalf("no ccePolicy in the template:\n%s", b)
	}
	val := string(b[i+len(`"ccePolicy": "`):])
	val = val[:strings.Index(val, `"`)]
	if text, err := base64.StdEncoding.DecodeString(val); err != nil || !strings.Contains(string(text), "package cocoon.policy") {
		t.Fatalf("ccePolicy is not a cocoon policy: %v", err)
	}
	out, errs := x.mustRun(0, "run", file)
	if !strings.Contains(out, `status={"message":"Status OK"}`) || !strings.Contains(out, "mode=aci") {
		t.Errorf("stdout %q stderr %q", out, errs)
	}
	x.mustRun(0, "rm", "aci-demo")
	// The same template with another command, under the policy made for the
	// first: refused, nothing runs.
	tampered := strings.Replace(string(b), "echo mode=$MODE", "echo tampered", 1)
	os.WriteFile(file, []byte(tampered), 0o644)
	out, errs, code := x.cocoon("run", file)
	if code == 0 || strings.Contains(out, "tampered") || !strings.Contains(errs, "CreateContainer") {
		t.Errorf("a changed template ran: %d %q %q", code, out, errs)
	}
}
