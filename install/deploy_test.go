package install

import (
	"bytes"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"sigs.k8s.io/yaml"
)

// TestDeployManifests: the manifests under deploy/ are valid Kubernetes
// objects (strictly decoded) and agree with the installer: the RuntimeClass
// names the handler `cocoon install containerd` adds, on the nodes the
// installer runs on.
func TestDeployManifests(t *testing.T) {
	b, err := os.ReadFile("../deploy/runtimeclass.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rc nodev1.RuntimeClass
	if err := yaml.UnmarshalStrict(b, &rc); err != nil {
		t.Fatalf("runtimeclass.yaml: %v", err)
	}
	if rc.Kind != "RuntimeClass" || rc.Name != "cocoon" || rc.Handler != "cocoon" || rc.Overhead == nil || rc.Scheduling == nil {
		t.Fatalf("runtimeclass.yaml: %+v", rc)
	}
	b, err = os.ReadFile("../deploy/installer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(b, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("installer.yaml has %d documents, want a Namespace and a DaemonSet", len(docs))
	}
	var ns corev1.Namespace
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(docs[0], &ns); err != nil || ns.Name != "cocoon-system" {
		t.Fatalf("namespace: %v %+v", err, ns)
	}
	if err := yaml.UnmarshalStrict(docs[1], &ds); err != nil {
		t.Fatalf("daemonset: %v", err)
	}
	if ds.Namespace != ns.Name {
		t.Errorf("the DaemonSet is in %q, not the namespace the file creates", ds.Namespace)
	}
	if ds.Spec.Template.Spec.NodeSelector["cocoon.dev/runtime"] != rc.Scheduling.NodeSelector["cocoon.dev/runtime"] {
		t.Error("the installer and the RuntimeClass select different nodes")
	}
	script := strings.Join(ds.Spec.Template.Spec.Containers[0].Command, " ")
	for _, want := range []string{"install containerd --host-root /host", "--config /etc/containerd/config.toml", "systemctl restart containerd"} {
		if !strings.Contains(script, want) {
			t.Errorf("the installer's command lacks %q", want)
		}
	}
}
