package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"cocoon.dev/cocoon/deploy"
	"cocoon.dev/cocoon/kbs"
	"cocoon.dev/cocoon/token"
)

// trustNamespace is deploy/trust-services.yaml's namespace.
const trustNamespace = "cocoon-trust"

// kbsStateSecretFiles are the broker state files its replicas read. The
// admin's private key is not among them: it stays with the admin.
var kbsStateSecretFiles = []string{kbs.FileConfig, kbs.FileAdminPub, kbs.FileMasterKey, kbs.FileTLSKey, kbs.FileTLSCert, kbs.FileCA, kbs.FileTokenKeys}

// writeKubernetes writes, to out (0600: it holds the master key), the
// Secrets deploy/trust-services.yaml reads — the broker's state, the
// attestation service's keys, the database's password and URLs — followed
// by that file.
func writeKubernetes(state, out string) error {
	// One set of token keys for every broker replica: a token one signs,
	// the others verify.
	if _, err := token.NewSigner(filepath.Join(state, kbs.FileTokenKeys), jose.ES256, 5*time.Minute); err != nil {
		return err
	}
	kbsData := map[string][]byte{}
	for _, f := range kbsStateSecretFiles {
		b, err := os.ReadFile(filepath.Join(state, f))
		if err != nil {
			return err
		}
		kbsData[f] = b
	}
	asDir, err := os.MkdirTemp("", "cocoon-as-keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(asDir)
	if _, err := token.NewSigner(filepath.Join(asDir, "token-keys.json"), jose.ES256, 5*time.Minute); err != nil {
		return err
	}
	asKeys, err := os.ReadFile(filepath.Join(asDir, "token-keys.json"))
	if err != nil {
		return err
	}
	password, adminTok := randomHex(24), randomHex(32)
	db := "postgres://cocoon:" + password + "@cocoon-postgres." + trustNamespace + ".svc:5432/cocoon?sslmode=disable"
	secret := func(name string, data map[string][]byte) corev1.Secret {
		return corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: trustNamespace}, Type: corev1.SecretTypeOpaque, Data: data}
	}
	var buf bytes.Buffer
	buf.WriteString("# Written by `cocoon kbs init --kubernetes`: the Secrets of cocoon's trust services,\n# then deploy/trust-services.yaml. It holds the broker's master key: keep it like one.\n")
	// The namespace first, so that the Secrets have one to go into.
	buf.WriteString("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + trustNamespace + "\n")
	for _, s := range []corev1.Secret{
		secret("cocoon-kbs-state", kbsData),
		secret("cocoon-as-state", map[string][]byte{"token-keys.json": asKeys, "admin-token": []byte(adminTok + "\n")}),
		secret("cocoon-trust-db", map[string][]byte{"password": []byte(password), "kbs-store": []byte(db), "as-store": []byte(db)}),
	} {
		y, err := yaml.Marshal(s)
		if err != nil {
			return err
		}
		buf.WriteString("---\n")
		buf.Write(y)
	}
	buf.WriteString("---\n")
	buf.WriteString(deploy.TrustServices())
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
