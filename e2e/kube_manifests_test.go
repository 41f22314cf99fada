package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// TestKBSInitKubernetes: `cocoon kbs init --kubernetes` writes (0600) the
// Secrets and the trust services' manifests, all strictly valid Kubernetes
// objects; every Secret key a manifest reads exists; probes name ports the
// containers have; each Deployment has a PodDisruptionBudget and a Service;
// the broker's certificate names its Service; the admin's private key is
// not in the file.
func TestKBSInitKubernetes(t *testing.T) {
	x := newH(t)
	state, out := filepath.Join(t.TempDir(), "kbs"), filepath.Join(t.TempDir(), "trust.yaml")
	x.mustRun(0, "kbs", "init", "--state", state, "--listen", "cocoon-kbs.cocoon-trust.svc:8443", "--kubernetes", out)
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", out, fi.Mode(), err)
	}
	b, _ := os.ReadFile(out)
	adminKey, _ := os.ReadFile(filepath.Join(state, "admin.key"))
	if bytes.Contains(b, adminKey) {
		t.Error("the admin's private key is in the manifests")
	}
	secrets := map[string]corev1.Secret{}
	var deps []appsv1.Deployment
	var sts []appsv1.StatefulSet
	services, pdbs := map[string]bool{}, map[string]bool{}
	for i, doc := range bytes.Split(b, []byte("\n---\n")) {
		var head struct{ Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		strict := func(v any) {
			if err := yaml.UnmarshalStrict(doc, v); err != nil {
				t.Fatalf("document %d (%s): %v", i, head.Kind, err)
			}
		}
		switch head.Kind {
		case "Namespace":
			var ns corev1.Namespace
			strict(&ns)
		case "Secret":
			var s corev1.Secret
			strict(&s)
			secrets[s.Name] = s
		case "Deployment":
			var d appsv1.Deployment
			strict(&d)
			deps = append(deps, d)
		case "StatefulSet":
			var s appsv1.StatefulSet
			strict(&s)
			sts = append(sts, s)
		case "Service":
			var s corev1.Service
			strict(&s)
			services[s.Name] = true
		case "PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			strict(&p)
			pdbs[p.Name] = true
		default:
			t.Fatalf("document %d: unexpected kind %q", i, head.Kind)
		}
	}
	specs := []corev1.PodSpec{}
	for _, d := range deps {
		if *d.Spec.Replicas < 2 || !services[d.Name] || !pdbs[d.Name] {
			t.Errorf("deployment %s: %d replicas, service %v, disruption budget %v", d.Name, *d.Spec.Replicas, services[d.Name], pdbs[d.Name])
		}
		specs = append(specs, d.Spec.Template.Spec)
	}
	for _, s := range sts {
		specs = append(specs, s.Spec.Template.Spec)
	}
	if len(deps) != 2 || len(sts) != 1 {
		t.Fatalf("%d deployments, %d statefulsets", len(deps), len(sts))
	}
	for _, ps := range specs {
		for _, v := range ps.Volumes {
			if v.Secret != nil {
				if _, ok := secrets[v.Secret.SecretName]; !ok {
					t.Errorf("volume %s reads Secret %s, which the file lacks", v.Name, v.Secret.SecretName)
				}
			}
		}
		for _, c := range append(ps.InitContainers, ps.Containers...) {
			for _, e := range c.Env {
				if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
					if _, ok := secrets[r.SecretKeyRef.Name].Data[r.SecretKeyRef.Key]; !ok {
						t.Errorf("%s reads %s/%s, which the file lacks", c.Name, r.SecretKeyRef.Name, r.SecretKeyRef.Key)
					}
				}
			}
			ports := map[string]bool{}
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && p.HTTPGet != nil && !ports[p.HTTPGet.Port.StrVal] {
					t.Errorf("%s: probe on port %q, which it lacks", c.Name, p.HTTPGet.Port.StrVal)
				}
			}
		}
	}
	kbsState := secrets["cocoon-kbs-state"].Data
	for _, f := range []string{"master.key", "token-keys.json", "tls.crt", "kbs.json", "admin.pub"} {
		if len(kbsState[f]) == 0 {
			t.Errorf("the broker's state Secret lacks %s", f)
		}
	}
	blk, _ := pem.Decode(kbsState["tls.crt"])
	if blk == nil {
		t.Fatal("tls.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil || cert.VerifyHostname("cocoon-kbs.cocoon-trust.svc") != nil {
		t.Errorf("the broker's certificate does not name its Service: %v %v", cert.DNSNames, err)
	}
	if db := string(secrets["cocoon-trust-db"].Data["kbs-store"]); !strings.HasPrefix(db, "postgres://cocoon:") {
		t.Errorf("kbs-store %q", db)
	}
}
