package pod

import (
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"
)

// Document is one YAML document of a manifest.
type Document struct {
	// Text is the document as written (without the --- separator).
	Text []byte
	// Kind, APIVersion and Name are read from it ("" when absent).
	Kind, APIVersion, Name string
}

// Workload reports whether cocoon runs this kind of document: a Pod (v1),
// a Deployment, StatefulSet, DaemonSet or ReplicaSet (apps/v1) or a Job
// (batch/v1). Other kinds (Service, ConfigMap, …) pass through untouched.
func (d *Document) Workload() bool {
	switch {
	case d.Kind == "Pod" && d.APIVersion == "v1":
		return true
	case d.APIVersion == "apps/v1":
		return d.Kind == "Deployment" || d.Kind == "StatefulSet" || d.Kind == "DaemonSet" || d.Kind == "ReplicaSet"
	case d.APIVersion == "batch/v1":
		return d.Kind == "Job"
	}
	return false
}

// Documents splits a manifest (documents separated by --- lines) and reads
// each document's kind, apiVersion and name. Documents holding only
// comments are dropped.
func Documents(data []byte) ([]Document, error) {
	if len(data) > maxSpecBytes {
		return nil, fmt.Errorf("manifest is %d bytes; at most %d are accepted", len(data), maxSpecBytes)
	}
	var out []Document
	for i, d := range splitDocs(data) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(d, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		out = append(out, Document{Text: d, Kind: head.Kind, APIVersion: head.APIVersion, Name: head.Metadata.Name})
	}
	return out, nil
}

// JoinDocuments writes documents back as one manifest.
func JoinDocuments(docs [][]byte) []byte {
	var b strings.Builder
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		s := strings.TrimLeft(string(d), "\n")
		b.WriteString(s)
		if !strings.HasSuffix(s, "\n") {
			b.WriteByte('\n')
		}
	}
	return []byte(b.String())
}
