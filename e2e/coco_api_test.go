package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/tee"
)

// TestCoCoAPIInPod: a container issues the requests of guest-components'
// api-server-rest README (api-server-rest/README.md, the curl examples),
// byte for byte with busybox wget, and gets upstream-shaped answers. The
// evidence it gets for a SHA-384 digest is what a stock KBS client sends
// as primary evidence: played here by the test, which attests to the key
// broker with it (composite evidence) and decrypts the resource; and the
// token /aa/token hands out fetches the resource with the key pair it came
// with.
func TestCoCoAPIInPod(t *testing.T) {
	x := newH(t)
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	x.startKBS(state, addr, "--allow-sim")
	secret := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secret, []byte("12345678901234567890123456xxxx"), 0o600)
	x.mustRun(0, "kbs", "put", "kbs:///default/key/1", secret, "--state", state)
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no CA in ca.pem")
	}
	kbsURL := "https://" + addr

	// The KBS client's first step: auth, then the runtime data to bind.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	code, ch := postJSON(t, hc, kbsURL+"/kbs/v0/auth", map[string]any{"version": "0.4.0", "tee": "sample",
		"extra-params": map[string]any{"supported-hash-algorithms": []string{"sha256", "sha384", "sha512"}}})
	if code != 200 || ch["extra-params"] != "" {
		t.Fatalf("auth: %d %v", code, ch)
	}
	nonce := ch["nonce"].(string)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubJSON, _ := jose.JSONWebKey{Key: &key.PublicKey}.MarshalJSON()
	var pub map[string]any
	json.Unmarshal(pubJSON, &pub)
	canon, _ := tee.CanonicalJSON(map[string]any{"additional-evidence": "", "nonce": nonce, "tee-pubkey": pub})
	digest := sha512.Sum384(canon)
	rd := base64.RawURLEncoding.EncodeToString(digest[:])

	// The probe: upstream's requests, each answer between markers.
	probe := strings.Join([]string{
		"q() { echo \"<<<$1\"; shift; wget -qO- \"$@\"; echo; echo \">>>\"; }",
		"q resource http://127.0.0.1:8006/cdh/resource/default/key/1",
		"q evidence 'http://127.0.0.1:8006/aa/evidence?runtime_data=xxxx'",
		"q evidence-b64 'http://127.0.0.1:8006/aa/evidence?runtime_data=eHh4eA&encoding=base64'",
		"q evidence-kbs 'http://127.0.0.1:8006/aa/evidence?runtime_data=" + rd + "&encoding=base64'",
		"q additional 'http://127.0.0.1:8006/aa/additional-evidence?runtime_data=xxxx'",
		"q token 'http://127.0.0.1:8006/aa/token?token_type=kbs'",
		"q info http://127.0.0.1:8006/info",
		`q aael --header 'Content-Type: application/json' --post-data '{"domain":"test","operation":"test","content":"test"}' http://127.0.0.1:8006/aa/aael`,
		"wget -qO- http://127.0.0.1:8006/aa/evidence 2>&1 || echo status=refused",
	}, "\n")
	p := x.pod(secretPod("coco", env.busybox, base64.StdEncoding.EncodeToString(ca), addr, probe))
	x.mustRun(0, "policy", "generate", p)
	out, errs := x.mustRun(0, "run", p)
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<<<(\S+)\n(.*?)\n?>>>`).FindAllStringSubmatch(out, -1) {
		got[m[1]] = strings.TrimSpace(m[2])
	}
	if got["resource"] != "12345678901234567890123456xxxx" {
		t.Errorf("/cdh/resource: %q (stderr %s)", got["resource"], errs)
	}
	for name, want := range map[string]string{"evidence": "xxxx", "evidence-b64": "xxxx", "evidence-kbs": string(digest[:])} {
		report, certs, err := tee.SNPFromAA([]byte(got[name]))
		var wantRD [64]byte
		copy(wantRD[:], want)
		if err != nil || len(certs["vcek"]) == 0 || string(report[0x50:0x90]) != string(wantRD[:]) {
			t.Errorf("/aa/evidence %s: %v, REPORT_DATA not %q zero-padded: %.200s", name, err, want, got[name])
		}
	}
	if got["additional"] != "" {
		t.Errorf("/aa/additional-evidence: %q, want empty (no devices)", got["additional"])
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(got["info"]), &info); err != nil || info["tee"] != "sample" || info["version"] == nil {
		t.Errorf("/info: %q", got["info"])
	}
	if !strings.Contains(got["aael"], `"success":"false"`) {
		t.Errorf("/aa/aael: %q", got["aael"])
	}
	if !strings.Contains(out, "status=refused") {
		t.Error("/aa/evidence without runtime_data was not refused")
	}

	// The stock client's second step: composite evidence with the pod's
	// report, then the resource, decrypted with the client's key.
	code, m := postJSON(t, hc, kbsURL+"/kbs/v0/attest", map[string]any{
		"runtime-data": map[string]any{"nonce": nonce, "tee-pubkey": pub},
		"tee-evidence": map[string]any{"primary_evidence": json.RawMessage(got["evidence-kbs"]), "additional_evidence": ""}})
	if code != 200 || m["token"] == nil {
		t.Fatalf("attest with the pod's evidence: %d %v", code, m)
	}
	code, body := getBody(t, hc, kbsURL+"/kbs/v0/resource/default/key/1", "")
	if code != 200 {
		t.Fatalf("resource: %d %s", code, body)
	}
	if pt, err := client.Decrypt(body, key); err != nil || string(pt) != "12345678901234567890123456xxxx" {
		t.Errorf("decrypt: %q %v", pt, err)
	}

	// /aa/token: {"token", "tee_keypair"}; the token fetches the resource
	// as a bearer token and the key pair decrypts it.
	var tk struct {
		Token      string `json:"token"`
		TEEKeypair string `json:"tee_keypair"`
	}
	if err := json.Unmarshal([]byte(got["token"]), &tk); err != nil || strings.Count(tk.Token, ".") != 2 {
		t.Fatalf("/aa/token: %q %v", got["token"], err)
	}
	blk, _ := pem.Decode([]byte(tk.TEEKeypair))
	if blk == nil {
		t.Fatalf("tee_keypair is not PEM: %q", tk.TEEKeypair)
	}
	priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	bc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	code, body = getBody(t, bc, kbsURL+"/kbs/v0/resource/default/key/1", tk.Token)
	if code != 200 {
		t.Fatalf("bearer: %d %s", code, body)
	}
	if pt, err := client.Decrypt(body, priv); err != nil || string(pt) != "12345678901234567890123456xxxx" {
		t.Errorf("decrypt with tee_keypair: %q %v", pt, err)
	}
}
