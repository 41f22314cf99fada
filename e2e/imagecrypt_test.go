package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
)

// secretImage is busybox with /secret.txt holding a marker assembled at
// run time (so no file of this test holds it) and returns both.
func secretImage(t *testing.T) (v1.Image, string) {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	m := "ENCRYPTED-LAYER-" + fmt.Sprintf("%x", b)
	l, err := testimage.Layer([]testimage.File{{Path: "/secret.txt", Data: []byte(m + "\n"), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Busybox(l)
	if err != nil {
		t.Fatal(err)
	}
	return img, m
}

func encImagePod(name, image, addr, caB64, decryptionKey string) string {
	extra := ""
	if decryptionKey != "" {
		extra = "\n    cocoon.dev/decryption-key: " + decryptionKey
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations:
    cocoon.dev/kbs: https://%s
    cocoon.dev/kbs-ca: %s%s
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    command: ["cat", "/secret.txt"]
`, name, addr, caB64, extra, image)
}

// simKBS starts a key broker that accepts the simulated TEE and returns
// its state directory, address and CA (base64 PEM, as the pod annotation
// takes it).
func (x *h) simKBS() (state, addr, caB64 string) {
	x.t.Helper()
	state, addr = filepath.Join(x.t.TempDir(), "kbs"), freeAddr(x.t)
	x.startKBS(state, addr, "--allow-sim")
	ca, err := os.ReadFile(filepath.Join(state, "ca.pem"))
	if err != nil {
		x.t.Fatal(err)
	}
	return state, addr, base64.StdEncoding.EncodeToString(ca)
}

// hostHolds returns a file under dir holding b, or "".
func hostHolds(dir string, b []byte) string {
	found := ""
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && found == "" {
			if c, _ := os.ReadFile(p); bytes.Contains(c, b) {
				found = p
			}
		}
		return nil
	})
	return found
}

func needSkopeo(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("skopeo is missing: scripts/deps.sh --test installs it")
		}
		t.Skip("needs skopeo (scripts/deps.sh --test)")
	}
}

// TestEncryptedImageSkopeo: an image skopeo encrypted for a JWE recipient
// runs when the broker releases the recipient's private key (a resource
// the pod annotation names), and is refused — nothing decrypted, nothing
// started — while the release policy refuses it.
func TestEncryptedImageSkopeo(t *testing.T) {
	needSkopeo(t)
	x := newH(t)
	state, addr, caB64 := x.simKBS()
	img, m := secretImage(t)
	plain, _, err := env.reg.Push("enc/skopeo:plain", img)
	if err != nil {
		t.Fatal(err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	os.WriteFile(filepath.Join(dir, "pub.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	enc := env.reg.Host() + "/enc/skopeo:1"
	cmd := exec.Command("skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
		"--encryption-key", "jwe:"+filepath.Join(dir, "pub.pem"), "docker://"+plain, "docker://"+enc)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo: %v\n%s", err, out)
	}
	x.mustRun(0, "kbs", "put", "kbs:///app/image/jwe-key", filepath.Join(dir, "key.pem"), "--state", state)
	p := x.pod(encImagePod("encjwe", enc, addr, caB64, "kbs:///app/image/jwe-key"))
	x.mustRun(0, "policy", "generate", p)
	annotated, _ := os.ReadFile(p)

	// First with the release refused: nothing decrypted, nothing started.
	x.setRelease(state, false)
	out, errs := x.mustRun(125, "run", p)
	if strings.Contains(out, m) || !strings.Contains(errs, "kbs:///app/image/jwe-key was not released") {
		t.Fatalf("refused release: stdout %q stderr %q", out, errs)
	}
	if f := hostHolds(x.root, []byte(m)); f != "" {
		t.Fatalf("the layer was decrypted without the key's release: %s", f)
	}
	x.mustRun(0, "rm", "encjwe")

	// Released: it runs.
	x.setRelease(state, true)
	os.WriteFile(p, annotated, 0o644)
	out, errs = x.mustRun(0, "run", p)
	if !strings.Contains(out, m) {
		t.Fatalf("released: stdout %q stderr %q", out, errs)
	}
	// The process sandbox (the simulated TEE) keeps its layers on the
	// host's disk: the marker is there now, which is what the VM test's
	// search must not find.
	if hostHolds(x.root, []byte(m)) == "" {
		t.Fatal("the process sandbox's layer store does not hold the decrypted layer: the VM test's search could not fail")
	}
}

// TestEncryptedImageCocoon: cocoon image encrypt stores a fresh key in the
// broker and the pod needs nothing but the broker's annotation.
func TestEncryptedImageCocoon(t *testing.T) {
	x := newH(t)
	state, addr, caB64 := x.simKBS()
	img, m := secretImage(t)
	plain, _, err := env.reg.Push("enc/cocoon:plain", img)
	if err != nil {
		t.Fatal(err)
	}
	enc := env.reg.Host() + "/enc/cocoon:1"
	out, errs := x.mustRun(0, "image", "encrypt", plain, enc, "--key", "kbs:///app/image/key", "--state", state)
	if !strings.Contains(out, enc[:strings.LastIndex(enc, ":")]+"@sha256:") || !strings.Contains(errs, "a new 32-byte key is stored") {
		t.Fatalf("image encrypt: stdout %q stderr %q", out, errs)
	}
	// A second image reuses the key: the first keeps decrypting.
	if _, errs := x.mustRun(0, "image", "encrypt", plain, enc+"-again", "--key", "kbs:///app/image/key", "--state", state); !strings.Contains(errs, "reused") {
		t.Fatalf("second encrypt: %q", errs)
	}
	p := x.pod(encImagePod("enccocoon", enc, addr, caB64, ""))
	x.mustRun(0, "policy", "generate", p)
	if out, errs := x.mustRun(0, "run", p); !strings.Contains(out, m) {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	// Without a broker annotation the generator says what is missing.
	_, errs = x.mustRun(1, "policy", "generate", x.pod(strings.Replace(simplePod("nokbs", enc, "Never", "true"), "", "", 1)))
	if !strings.Contains(errs, "is encrypted: its keys come from a key broker") {
		t.Fatalf("no broker: %q", errs)
	}
}

// TestVMEncryptedImage: in a VM sandbox the decrypted layers live only in
// the guest's memory: the container proves it read the plaintext (its
// hash), and no file under the runtime's state holds it. (The process
// sandbox keeps them on the host's disk, which TestEncryptedImageSkopeo
// shows this search finds.)
func TestVMEncryptedImage(t *testing.T) {
	x := newH(t)
	vmReady(t)
	x.guestBuild(filepath.Join(env.bin, "cocoon-agent"))
	state, addr, caB64 := x.simKBS()
	img, m := secretImage(t)
	plain, _, err := env.reg.Push("enc/vm:plain", img)
	if err != nil {
		t.Fatal(err)
	}
	enc := env.reg.Host() + "/enc/vm:1"
	x.mustRun(0, "image", "encrypt", plain, enc, "--key", "kbs:///app/image/key", "--state", state)
	pod := strings.Replace(encImagePod("vmencimg", enc, addr, caB64, ""),
		`command: ["cat", "/secret.txt"]`, `command: ["sh", "-c", "sha256sum /secret.txt | cut -c1-64"]`, 1)
	p := x.pod(pod)
	x.mustRun(0, "policy", "generate", p)
	out, errs := x.mustRun(0, "run", "--isolation", "qemu", p)
	sum := sha256.Sum256([]byte(m + "\n"))
	if !strings.Contains(out, hex.EncodeToString(sum[:])) || strings.Contains(out+errs, m) {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	if f := hostHolds(x.root, []byte(m)); f != "" {
		t.Fatalf("the plaintext of the encrypted layer is on the host: %s", f)
	}
	x.mustRun(0, "rm", "vmencimg")
}
