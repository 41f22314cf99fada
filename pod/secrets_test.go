package pod

import (
	"encoding/base64"
	"strings"
	"testing"

	"cocoon.dev/cocoon/sealed"
)

// TestSecretKeyRef: an env value from a Secret of the same manifest is
// taken when it is a sealed secret (from data or stringData) and refused,
// saying what to do, when it is plain, absent, or optional.
func TestSecretKeyRef(t *testing.T) {
	ref, err := sealed.Seal("kbs:///app/db/password")
	if err != nil {
		t.Fatal(err)
	}
	manifest := `apiVersion: v1
kind: Secret
metadata: {name: db}
data:
  password: ` + base64.StdEncoding.EncodeToString([]byte(ref)) + `
  plain: ` + base64.StdEncoding.EncodeToString([]byte("hunter2")) + `
---
apiVersion: v1
kind: Secret
metadata: {name: str}
stringData:
  password: "` + ref + `"
`
	docs, err := Documents([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := SecretsOf(docs)
	if err != nil {
		t.Fatal(err)
	}
	podWith := func(valueFrom string) string {
		return `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: app
    image: busybox@sha256:` + strings.Repeat("a", 64) + `
    env:
    - name: DB_PASSWORD
      valueFrom: ` + valueFrom + `
`
	}
	for _, tc := range []struct {
		name, valueFrom, err string
	}{
		{"from data", `{secretKeyRef: {name: db, key: password}}`, ""},
		{"from stringData", `{secretKeyRef: {name: str, key: password}}`, ""},
		{"plain value", `{secretKeyRef: {name: db, key: plain}}`, "is not a sealed secret"},
		{"no such secret", `{secretKeyRef: {name: other, key: password}}`, "not in the manifest"},
		{"no such key", `{secretKeyRef: {name: db, key: nope}}`, `has no key "nope"`},
		{"optional", `{secretKeyRef: {name: db, key: password, optional: true}}`, "optional"},
		{"fieldRef", `{fieldRef: {fieldPath: metadata.name}}`, "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseWith([]byte(podWith(tc.valueFrom)), Options{Secrets: secrets})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("the error repeats the plain secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			env := p.Main[0].Spec.GetEnv()
			if len(env) != 1 || env[0].GetValue() != ref {
				t.Fatalf("env %v, want the sealed reference", env)
			}
		})
	}
}
