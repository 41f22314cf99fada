package e2e

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

type kbsProc struct {
	state, addr string
	cmd         *exec.Cmd
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startKBS inits (once per state) and serves a key broker.
func (x *h) startKBS(state, addr string, args ...string) *kbsProc {
	x.t.Helper()
	if _, err := os.Stat(filepath.Join(state, "kbs.json")); err != nil {
		x.mustRun(0, "kbs", "init", "--state", state, "--listen", addr)
	}
	global := []string{"--root", x.root}
	if x.simState != "" {
		global = append(global, "--sim-state", x.simState)
	}
	cmd := exec.Command(filepath.Join(env.bin, "cocoon"), append(global, append([]string{"kbs", "serve", "--state", state, "--listen", addr}, args...)...)...)
	x.serve(cmd)
	return &kbsProc{state: state, addr: addr, cmd: cmd}
}

// setRelease sets the broker's release policy to allow or refuse every
// resource.
func (x *h) setRelease(state string, allow bool) {
	x.t.Helper()
	p := filepath.Join(x.t.TempDir(), "release.rego")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("package policy\ndefault allow := %v\n", allow)), 0o644); err != nil {
		x.t.Fatal(err)
	}
	x.mustRun(0, "kbs", "policy", "set", p, "--state", state)
}

func secretPod(name, image, ca, addr, command string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations:
    cocoon.dev/kbs: https://%s
    cocoon.dev/kbs-ca: %s
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: %s
    command: ["sh", "-c", %q]
`, name, addr, ca, image, command)
}

// TestSecretReleasedIntoPod: a container gets a secret from a running key
// broker through the in-pod API; a release policy pinning the pod's policy
// hash refuses another workload, and the audit log says why.
func TestSecretReleasedIntoPod(t *testing.T) {
	x := newH(t)
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	x.startKBS(state, addr, "--allow-sim")
	secret := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secret, []byte("the-db-password"), 0o600)
	x.mustRun(0, "kbs", "put", "kbs:///app/db/password", secret, "--state", state)
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	caB64 := base64.StdEncoding.EncodeToString(ca)
	get := "echo secret=$(wget -qO- http://127.0.0.1:8006/cdh/resource/app/db/password)"
	p := x.pod(secretPod("secret", env.busybox, caB64, addr, get))
	x.mustRun(0, "policy", "generate", p)
	out, errs := x.mustRun(0, "run", p)
	if !strings.Contains(out, "secret=the-db-password") {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	// Pin the release to this pod's policy hash.
	hash := policyHash(t, p)
	pol := filepath.Join(t.TempDir(), "pol.rego")
	os.WriteFile(pol, []byte(`package policy
import rego.v1
default allow := false
hd := input.submods.cpu0["ear.veraison.annotated-evidence"].host_data
allow if hd == "`+hash+`"
reasons contains sprintf("host_data %s is not the pinned workload", [hd]) if not allow
`), 0o644)
	x.mustRun(0, "kbs", "policy", "set", pol, "--state", state)
	x.mustRun(0, "rm", "secret")
	out, _ = x.mustRun(0, "run", p)
	if !strings.Contains(out, "secret=the-db-password") {
		t.Errorf("pinned workload: %s", out)
	}
	// Another workload (another command, so another policy) gets nothing.
	p2 := x.pod(secretPod("other", env.busybox, caB64, addr, get+" ; echo done"))
	x.mustRun(0, "policy", "generate", p2)
	out, _ = x.mustRun(0, "run", p2)
	if strings.Contains(out, "the-db-password") || !strings.Contains(out, "secret=") {
		t.Errorf("other workload: %s", out)
	}
	audit, _ := os.ReadFile(filepath.Join(state, "audit.log"))
	if !strings.Contains(string(audit), "is not the pinned workload") || strings.Contains(string(audit), "the-db-password") {
		t.Errorf("audit log:\n%s", audit)
	}
	// The broker's own listing and admin get.
	ls, _ := x.mustRun(0, "kbs", "ls", "--state", state)
	if !strings.Contains(ls, "kbs:///app/db/password") {
		t.Errorf("ls: %s", ls)
	}
}

func policyHash(t *testing.T, pod string) string {
	b, _ := os.ReadFile(pod)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "cocoon.dev/policy-hash: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no policy hash annotation")
	return ""
}

// TestKBSDurability: kill -9 right after acknowledged puts; after a
// restart every acknowledged resource is there.
func TestKBSDurability(t *testing.T) {
	x := newH(t)
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	k := x.startKBS(state, addr)
	f := filepath.Join(t.TempDir(), "v")
	const n = 30
	for i := 0; i < n; i++ {
		os.WriteFile(f, []byte(fmt.Sprintf("value-%d", i)), 0o600)
		x.mustRun(0, "kbs", "put", fmt.Sprintf("kbs:///dur/k/v%d", i), f, "--state", state)
	}
	k.cmd.Process.Signal(syscall.SIGKILL)
	k.cmd.Wait()
	x.startKBS(state, addr)
	for i := 0; i < n; i++ {
		out, _ := x.mustRun(0, "kbs", "get", fmt.Sprintf("kbs:///dur/k/v%d", i), "--state", state)
		if out != fmt.Sprintf("value-%d", i) {
			t.Errorf("v%d after kill -9: %q", i, out)
		}
	}
	// The store on disk holds no plaintext.
	db, _ := os.ReadFile(filepath.Join(state, "resources.db"))
	if strings.Contains(string(db), "value-1") {
		t.Error("the store holds plaintext")
	}
	// Admin with a wrong key is refused.
	other := filepath.Join(t.TempDir(), "other")
	x.mustRun(0, "kbs", "init", "--state", other, "--listen", addr)
	_, errs := x.mustRun(1, "kbs", "ls", "--kbs", "https://"+addr, "--admin-key", filepath.Join(other, "admin.key"), "--ca", filepath.Join(state, "ca.pem"))
	if !strings.Contains(errs, "401") {
		t.Errorf("wrong admin key: %s", errs)
	}
}

// TestSealedSecretEnv: a pod's env value is a sealed secret (cocoon kbs
// seal); the container sees the resource, the pod file and the policy the
// reference only. When the release policy refuses, the container is not
// created and the error names the secret, not its value.
func TestSealedSecretEnv(t *testing.T) {
	x := newH(t)
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	x.startKBS(state, addr, "--allow-sim")
	secret := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secret, []byte("sealed-db-password"), 0o600)
	x.mustRun(0, "kbs", "put", "kbs:///app/db/password", secret, "--state", state)
	ref, _ := x.mustRun(0, "kbs", "seal", "kbs:///app/db/password")
	ref = strings.TrimSpace(ref)
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	yaml := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: sealed
  annotations:
    cocoon.dev/kbs: https://%s
    cocoon.dev/kbs-ca: %s
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: %s
    command: ["sh", "-c", "echo secret=$DB_PASSWORD"]
    env:
    - name: DB_PASSWORD
      value: %s
`, addr, base64.StdEncoding.EncodeToString(ca), env.busybox, ref)
	p := x.pod(yaml)
	x.mustRun(0, "policy", "generate", p)
	// The pod file (with its policy annotation) and the policy itself hold
	// the reference, not the secret.
	b, err := os.ReadFile(p)
	if err != nil || !strings.Contains(string(b), "cocoon.dev/policy") || strings.Contains(string(b), "sealed-db-password") {
		t.Fatalf("the annotated pod file (%v):\n%s", err, b)
	}
	if pol, _ := x.mustRun(0, "policy", "generate", "--print", p); !strings.Contains(pol, ref) || strings.Contains(pol, "sealed-db-password") {
		t.Fatalf("the policy:\n%s", pol)
	}
	out, errs := x.mustRun(0, "run", p)
	if !strings.Contains(out, "secret=sealed-db-password") {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	// The broker now refuses everything: nothing is created.
	pol := filepath.Join(t.TempDir(), "deny.rego")
	os.WriteFile(pol, []byte("package policy\ndefault allow := false\n"), 0o644)
	x.mustRun(0, "kbs", "policy", "set", pol, "--state", state)
	x.mustRun(0, "rm", "sealed")
	out, errs = x.mustRun(128, "run", p) // CreateError, as runc's "cannot start"
	if strings.Contains(out+errs, "sealed-db-password") || strings.Contains(out, "secret=") ||
		!strings.Contains(errs, "sealed secret kbs:///app/db/password was not released") {
		t.Fatalf("refused release: stdout %q stderr %q", out, errs)
	}
}

// TestSealedSecretFromKubernetesSecret: a Deployment whose env comes from
// a Secret of the same manifest (valueFrom.secretKeyRef, as kubelet
// resolves it): the generated policy pins the sealed reference; a Secret
// with a plain value is refused without the policy or the error holding
// it. (What kubelet then passes is the reference itself, which
// TestSealedSecretEnv runs.)
func TestSealedSecretFromKubernetesSecret(t *testing.T) {
	x := newH(t)
	ref, _ := x.mustRun(0, "kbs", "seal", "kbs:///app/db/password")
	ref = strings.TrimSpace(ref)
	manifest := func(value string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: db}
stringData:
  password: %q
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: %s
        command: ["sh", "-c", "echo $DB_PASSWORD"]
        env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db, key: password}}
`, value, env.busybox)
	}
	p := x.pod(manifest(ref))
	x.mustRun(0, "policy", "generate", p)
	b, _ := os.ReadFile(p)
	docs := strings.Split(string(b), "\n---\n")
	if len(docs) != 2 || !strings.Contains(docs[1], "cocoon.dev/policy") {
		t.Fatalf("the annotated manifest:\n%s", b)
	}
	pol, _ := x.mustRun(0, "policy", "generate", "--print", x.pod(manifest(ref)))
	if !strings.Contains(pol, ref) {
		t.Fatalf("the policy does not pin the sealed reference:\n%s", pol)
	}
	plain := x.pod(manifest("hunter2-plain"))
	_, errs := x.mustRun(1, "policy", "generate", plain)
	if !strings.Contains(errs, `Secret "db" key "password" is not a sealed secret`) || strings.Contains(errs, "hunter2-plain") {
		t.Fatalf("a plain Secret value: %s", errs)
	}
	if b, _ := os.ReadFile(plain); strings.Contains(string(b), "cocoon.dev/policy") {
		t.Fatal("a policy was written for the plain Secret")
	}
}

// TestSealedSecretVolume: a Secret volume whose values are sealed secrets
// (a Secret of the same manifest): the policy pins the references, the
// agent writes the released values into a memory-backed, read-only volume
// with the items' paths and modes; while the broker refuses, the sandbox
// is not created. A Secret with a plain value gets no policy.
func TestSealedSecretVolume(t *testing.T) {
	x := newH(t)
	state, addr, caB64 := x.simKBS()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cert"), []byte("volume-secret-cert"), 0o600)
	os.WriteFile(filepath.Join(dir, "key"), []byte("volume-secret-key"), 0o600)
	x.mustRun(0, "kbs", "put", "kbs:///app/tls/cert", filepath.Join(dir, "cert"), "--state", state)
	x.mustRun(0, "kbs", "put", "kbs:///app/tls/key", filepath.Join(dir, "key"), "--state", state)
	seal := func(uri string) string {
		out, _ := x.mustRun(0, "kbs", "seal", uri)
		return strings.TrimSpace(out)
	}
	certRef, keyRef := seal("kbs:///app/tls/cert"), seal("kbs:///app/tls/key")
	manifest := func(key string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: tls}
stringData:
  tls.crt: %q
  tls.key: %q
---
apiVersion: v1
kind: Pod
metadata:
  name: sealedvol
  annotations:
    cocoon.dev/kbs: https://%s
    cocoon.dev/kbs-ca: %s
spec:
  restartPolicy: Never
  volumes:
  - name: tls
    secret:
      secretName: tls
      items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: private/tls.key, mode: 0400}
  containers:
  - name: app
    image: %s
    command: ["sh", "-c", "cat /etc/tls/tls.crt; echo; cat /etc/tls/private/tls.key; echo; stat -c '%%a %%n' /etc/tls/tls.crt /etc/tls/private/tls.key; touch /etc/tls/x 2>/dev/null || echo read-only"]
    volumeMounts: [{name: tls, mountPath: /etc/tls}]
`, certRef, key, addr, caB64, env.busybox)
	}
	p := x.pod(manifest(keyRef))
	x.mustRun(0, "policy", "generate", p)
	b, _ := os.ReadFile(p)
	pol, _ := x.mustRun(0, "policy", "generate", "--print", x.pod(manifest(keyRef)))
	if strings.Contains(string(b)+pol, "volume-secret") || !strings.Contains(pol, keyRef) || !strings.Contains(pol, `"sealed_volumes"`) {
		t.Fatalf("the pod file or the policy holds a value, or the policy lacks the references:\n%s", pol)
	}
	annotated := b

	// The broker refuses: no sandbox.
	x.setRelease(state, false)
	out, errs := x.mustRun(125, "run", p)
	if strings.Contains(out+errs, "volume-secret") || !strings.Contains(errs, "the sealed secret kbs:///app/tls/") {
		t.Fatalf("refused release: stdout %q stderr %q", out, errs)
	}
	if ps, _ := x.mustRun(0, "ps"); strings.Contains(ps, "sealedvol") {
		t.Fatalf("a sandbox is left after the refusal:\n%s", ps)
	}

	x.setRelease(state, true)
	os.WriteFile(p, annotated, 0o644)
	out, errs = x.mustRun(0, "run", p)
	for _, want := range []string{"volume-secret-cert", "volume-secret-key", "644 /etc/tls/tls.crt", "400 /etc/tls/private/tls.key", "read-only"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stdout %q stderr %q: want %q", out, errs, want)
		}
	}
	// A plain value in the Secret: refused, named without the value.
	plain := x.pod(manifest("plain-private-key"))
	_, errs = x.mustRun(1, "policy", "generate", plain)
	if !strings.Contains(errs, `Secret "tls" key "tls.key" is not a sealed secret`) || strings.Contains(errs, "plain-private-key") {
		t.Fatalf("a plain Secret value: %s", errs)
	}
}
