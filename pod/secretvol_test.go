package pod

import (
	"strings"
	"testing"

	"cocoon.dev/cocoon/sealed"
)

// TestSecretVolume: a Secret volume of sealed values becomes a sealed
// volume (items and modes as kubelet applies them, mounts read-only);
// what cannot be pinned is refused by name, never repeating a value.
func TestSecretVolume(t *testing.T) {
	ref, err := sealed.Seal("kbs:///app/tls/key")
	if err != nil {
		t.Fatal(err)
	}
	secrets := `apiVersion: v1
kind: Secret
metadata: {name: tls}
stringData:
  key: "` + ref + `"
  crt: "` + ref + `"
  plain: "hunter2"
---
`
	podWith := func(vol string) string {
		return secrets + `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  volumes:
  - name: v
    secret: ` + vol + `
  containers:
  - name: c
    image: busybox
    volumeMounts: [{name: v, mountPath: /v}]
`
	}
	p, err := Parse([]byte(podWith(`{secretName: tls, defaultMode: 0440, items: [{key: key, path: a/key, mode: 0400}, {key: crt, path: crt}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sealed) != 1 || len(p.Sealed[0].Files) != 2 {
		t.Fatalf("sealed volumes: %v", p.Sealed)
	}
	f := p.Sealed[0].Files
	if f[0].Path != "a/key" || f[0].Mode != 0o400 || f[1].Path != "crt" || f[1].Mode != 0o440 || f[0].Value != ref {
		t.Fatalf("files: %v", f)
	}
	if !p.Main[0].Spec.GetMounts()[0].GetReadOnly() {
		t.Fatal("the Secret volume is mounted read-write")
	}
	for vol, want := range map[string]string{
		`{secretName: tls}`:   `key "plain" is not a sealed secret`,
		`{secretName: other}`: `"other" is not a Secret of the manifest`,
		`{secretName: tls, optional: true, items: [{key: key, path: k}]}`: "optional",
		`{secretName: tls, items: [{key: nope, path: k}]}`:                `no key "nope"`,
		`{secretName: tls, items: [{key: key, path: ../k}]}`:              "relative and clean",
		`{secretName: tls, items: [{key: key, path: /k}]}`:                "relative and clean",
		`{secretName: tls, items: [{key: key, path: k, mode: 04755}]}`:    "not a permission mode",
	} {
		_, err := Parse([]byte(podWith(vol)))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v, want an error saying %q", vol, err, want)
		}
	}
}
