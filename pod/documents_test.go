package pod

import (
	"strings"
	"testing"
)

func TestDocuments(t *testing.T) {
	m := []byte(`# a Deployment, its Service and ConfigMap
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      runtimeClassName: cocoon
      containers: [{name: web, image: "reg/web@sha256:` + strings.Repeat("a", 64) + `"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
# only a comment
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
`)
	docs, err := Documents(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 3 {
		t.Fatalf("%d documents", len(docs))
	}
	want := []struct {
		kind, name string
		workload   bool
	}{{"Deployment", "web", true}, {"Service", "web", false}, {"ConfigMap", "cfg", false}}
	for i, w := range want {
		if docs[i].Kind != w.kind || docs[i].Name != w.name || docs[i].Workload() != w.workload {
			t.Errorf("document %d: %+v, want %+v", i, docs[i], w)
		}
	}
	// A pod with runtimeClassName parses (a Kubernetes pod for cocoon
	// always carries it).
	if _, err := Parse(docs[0].Text); err != nil {
		t.Errorf("runtimeClassName: %v", err)
	}
	var texts [][]byte
	for _, d := range docs {
		texts = append(texts, d.Text)
	}
	again, err := Documents(JoinDocuments(texts))
	if err != nil || len(again) != 3 || string(again[2].Text) != string(docs[2].Text) {
		t.Errorf("join and split again: %v %v", again, err)
	}
	if _, err := Documents([]byte("a: [\n")); err == nil {
		t.Error("malformed YAML accepted")
	}
}
