package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyCLI: generate (in place, -o, --print), settings, explain, diff.
func TestPolicyCLI(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`# a comment that must survive
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: web
        image: %s
        command: ["sh", "-c", "echo serving"]
`, env.pinned))
	out, _ := x.mustRun(0, "policy", "generate", p)
	if !strings.Contains(out, "policy sha256") {
		t.Errorf("generate: %s", out)
	}
	y, _ := os.ReadFile(p)
	if !strings.Contains(string(y), "# a comment that must survive") || !strings.Contains(string(y), "cocoon.dev/policy-hash") {
		t.Errorf("annotated file:\n%s", y)
	}
	rego, _ := x.mustRun(0, "policy", "generate", "--print", p)
	if !strings.Contains(rego, "package cocoon.policy") || !strings.Contains(rego, `"echo serving"`) {
		t.Errorf("--print: %s", rego)
	}
	other := filepath.Join(t.TempDir(), "out.yaml")
	x.mustRun(0, "policy", "generate", p, "-o", other)
	if _, err := os.Stat(other); err != nil {
		t.Errorf("-o FILE: %v", err)
	}
	settings, _ := x.mustRun(0, "policy", "settings")
	if !strings.Contains(settings, "env_patterns") {
		t.Errorf("settings: %s", settings)
	}
	out, _ = x.mustRun(0, "policy", "diff", p)
	if !strings.Contains(out, "matches") {
		t.Errorf("diff of a fresh policy: %s", out)
	}
	// Change the command: the annotated policy no longer matches.
	os.WriteFile(p, []byte(strings.Replace(string(y), "echo serving", "echo changed", 1)), 0o644)
	out, _ = x.mustRun(2, "policy", "diff", p)
	if !strings.Contains(out, `containers.web.args: annotated ["sh","-c","echo serving"], fresh ["sh","-c","echo changed"]`) {
		t.Errorf("diff: %s", out)
	}
	req := filepath.Join(t.TempDir(), "req.json")
	os.WriteFile(req, []byte(`{"method": "CreateContainer", "request": {"spec": {"name": "web", "image": "`+env.pinned+`", "command": ["sh", "-c", "echo serving"], "env": [{"name": "LD_PRELOAD", "value": "x.so"}]}}}`), 0o644)
	out, _ = x.mustRun(2, "policy", "explain", "--policy", p, "--request", req)
	if !strings.Contains(out, "CreateContainer: denied") || !strings.Contains(out, `create_container "web": env LD_PRELOAD=<redacted> is not allowed by the policy`) {
		t.Errorf("explain: %s", out)
	}
	os.WriteFile(req, []byte(`{"method": "CreateContainer", "request": {"spec": {"name": "web", "image": "`+env.pinned+`", "command": ["sh", "-c", "echo serving"]}}}`), 0o644)
	out, _ = x.mustRun(0, "policy", "explain", "--policy", p, "--request", req)
	if !strings.Contains(out, "allowed") {
		t.Errorf("explain allowed: %s", out)
	}
}
