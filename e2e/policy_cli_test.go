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

// TestPolicyGenerateManifest: a Deployment (with runtimeClassName, as every
// Kubernetes pod for cocoon has), its Service and ConfigMap, and a Job, in
// one file: each workload gets its policy, the other documents are kept,
// and the Deployment's policy is the one it gets alone (it then runs).
func TestPolicyGenerateManifest(t *testing.T) {
	x := newH(t)
	dep := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  template:
    spec:
      runtimeClassName: cocoon
      restartPolicy: Never
      containers: [{name: web, image: "` + env.busybox + `", command: ["echo", "deployed"]}]
`
	svc := `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
`
	cm := `apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello}
`
	job := `apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: job, image: "` + env.busybox + `", command: ["true"]}]
`
	m := x.pod(dep + "---\n" + svc + "---\n" + cm + "---\n" + job)
	out, _ := x.mustRun(0, "policy", "generate", m)
	if !strings.Contains(out, "Deployment/web: policy sha256") || !strings.Contains(out, "Job/once: policy sha256") {
		t.Errorf("summary: %s", out)
	}
	b, _ := os.ReadFile(m)
	docs := strings.Split(string(b), "\n---\n")
	if len(docs) != 4 {
		t.Fatalf("%d documents after generation:\n%s", len(docs), b)
	}
	if strings.TrimSpace(docs[1]) != strings.TrimSpace(svc) || strings.TrimSpace(docs[2]) != strings.TrimSpace(cm) {
		t.Errorf("the Service or ConfigMap changed:\n%s", b)
	}
	for _, i := range []int{0, 3} {
		if !strings.Contains(docs[i], "cocoon.dev/policy:") || !strings.Contains(docs[i], "cocoon.dev/policy-hash:") {
			t.Errorf("workload %d not annotated:\n%s", i, docs[i])
		}
	}
	// The same policy as the Deployment alone, and it runs.
	alone := x.pod(dep)
	x.mustRun(0, "policy", "generate", alone)
	if policyHash(t, alone) != policyHash(t, x.pod(docs[0])) {
		t.Error("the Deployment's policy differs from the one it gets alone")
	}
	run, _ := x.mustRun(0, "run", "--rm", x.pod(docs[0]))
	if !strings.Contains(run, "deployed") {
		t.Errorf("run: %s", run)
	}
}
