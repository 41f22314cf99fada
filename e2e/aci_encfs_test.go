package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/hkdf"
)

// TestACIEncfsGroup: an ACI group with Azure's encrypted-filesystem sidecar
// runs with cocoon's encrypted volume instead. The data owner makes the
// filesystem image with the key file the sidecar would derive — HKDF-SHA256
// over the RSA key's D, with the configuration's salt and label (computed
// here with x/crypto, as the sidecar does) — from a key made in the
// broker; the app reads the plaintext at the sidecar's mount point, and
// the image served over HTTP holds none of it.
func TestACIEncfsGroup(t *testing.T) {
	x := newH(t)
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	x.startKBS(state, addr, "--allow-sim")
	x.mustRun(0, "kbs", "key", "create", "fs-key", "--state", state)
	jwkJSON, _ := x.mustRun(0, "kbs", "get", "kbs:///keyvault/keys/fs-key", "--state", state)
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON([]byte(jwkJSON)); err != nil || jwk.IsPublic() {
		t.Fatalf("the broker's key: %v", err)
	}
	salt, label := []byte{0x5a, 0x17}, "Volume Key"
	keyFile := filepath.Join(t.TempDir(), "keyfile.bin")
	derived := make([]byte, 32)
	io.ReadFull(hkdf.New(sha256.New, jwkD(t, &jwk), salt, []byte(label)), derived)
	os.WriteFile(keyFile, derived, 0o600)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "src"), 0o755)
	os.WriteFile(filepath.Join(dir, "src", "test.txt"), []byte("encfs-plaintext-marker"), 0o644)
	img := filepath.Join(dir, "fs.img")
	x.mustRun(0, "volume", "create", "--size", "16M", "--fs", "ext4", "--kdf", "pbkdf2", "--key-file", keyFile, "--from", filepath.Join(dir, "src"), img)
	if b, _ := os.ReadFile(img); strings.Contains(string(b), "encfs-plaintext-marker") {
		t.Fatal("the image holds the plaintext")
	}
	imgURL, ranged := serveRanges(t, img)

	args, _ := json.Marshal(map[string]any{"azure_filesystems": []any{map[string]any{
		"mount_point": "/mnt/remote/share", "azure_url": imgURL, "azure_url_private": false, "read_write": false,
		"key":            map[string]any{"kid": "fs-key", "kty": "RSA-HSM", "authority": map[string]any{"endpoint": "maa.example"}, "akv": map[string]any{"endpoint": addr}},
		"key_derivation": map[string]any{"salt": "5a17", "label": label},
	}}})
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	tmpl, _ := json.MarshalIndent(map[string]any{
		"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "contentVersion": "1.0.0.0",
		"resources": []any{map[string]any{
			"type": "Microsoft.ContainerInstance/containerGroups", "apiVersion": "2023-05-01", "name": "encfs-demo",
			"tags": map[string]any{"cocoon.dev/kbs": "https://" + addr, "cocoon.dev/kbs-ca": base64.StdEncoding.EncodeToString(ca)},
			"properties": map[string]any{
				"osType": "Linux", "sku": "Confidential", "restartPolicy": "Never",
				"confidentialComputeProperties": map[string]any{"ccePolicy": ""},
				"volumes":                       []any{map[string]any{"name": "remotemounts", "emptyDir": map[string]any{}}},
				"containers": []any{
					map[string]any{"name": "encrypted-filesystem-sidecar-container", "properties": map[string]any{
						"image": "mcr.microsoft.com/aci/encfs:2.12", "command": []any{"/encfs.sh"},
						"environmentVariables": []any{map[string]any{"name": "EncfsSideCarArgs", "value": base64.StdEncoding.EncodeToString(args)}},
						"volumeMounts":         []any{map[string]any{"name": "remotemounts", "mountPath": "/mnt/remote"}},
						"securityContext":      map[string]any{"privileged": true},
						"resources":            map[string]any{"requests": map[string]any{"cpu": 1, "memoryInGB": 2}}}},
					map[string]any{"name": "app", "properties": map[string]any{
						"image": env.busybox, "command": []any{"sh", "-c", "echo read=$(cat /mnt/remote/share/test.txt)"},
						"volumeMounts": []any{map[string]any{"name": "remotemounts", "mountPath": "/mnt/remote"}},
						"resources":    map[string]any{"requests": map[string]any{"cpu": 0.5, "memoryInGB": 0.5}}}},
				}}}}}, "", "  ")
	file := filepath.Join(t.TempDir(), "template.json")
	os.WriteFile(file, tmpl, 0o644)
	_, errs := x.mustRun(0, "policy", "generate", file)
	if !strings.Contains(errs, "encrypted-filesystem sidecar") {
		t.Errorf("no warning that the sidecar is replaced: %s", errs)
	}
	out, errs := x.mustRun(0, "run", file)
	if !strings.Contains(out, "read=encfs-plaintext-marker") {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	if ranged.Load() == 0 {
		t.Error("the image was not read with range requests")
	}
}

// jwkD is an RSA JWK's private exponent, big-endian, as the sidecar reads it.
func jwkD(t *testing.T, k *jose.JSONWebKey) []byte {
	t.Helper()
	var m map[string]string
	b, _ := k.MarshalJSON()
	json.Unmarshal(b, &m)
	d, err := base64.RawURLEncoding.DecodeString(m["d"])
	if err != nil || len(d) == 0 {
		t.Fatalf("no private exponent: %v", err)
	}
	return d
}
