package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// tlsFiles writes a CA and a server certificate for 127.0.0.1 signed by it.
func tlsFiles(t *testing.T) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	st := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, st, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	kd, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

// TestSKRAPIInPod: a container issues the Azure SKR sidecar's requests, as
// its test clients send them (docker/skr/tests/attest_client.sh and
// skr_client.sh in confidential-sidecar-containers: localhost:8080, the
// same JSON bodies), and gets the sidecar's answers: a raw report binding
// SHA-256 of the runtime data, the combined data, an MAA-shaped token from
// the attestation service the policy pins, and a key released from the key
// broker; a request naming another attestation service is refused with
// {"error"}.
func TestSKRAPIInPod(t *testing.T) {
	x := newH(t)
	asCA, cert, key := tlsFiles(t)
	asURL := x.startAS("--trust-sim", "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(asURL, "https://") {
		t.Fatalf("the attestation service is not on TLS: %s", asURL)
	}
	asHost := strings.TrimPrefix(asURL, "https://")
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	x.startKBS(state, addr, "--allow-sim")
	out, _ := x.mustRun(0, "kbs", "key", "create", "skr-key", "--state", state, "-o", "json")
	var created struct {
		PublicJWK map[string]any `json:"public_jwk"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.PublicJWK["n"] == nil {
		t.Fatalf("kbs key create: %q %v", out, err)
	}
	kbsCA, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	rtJSON := `{"keys":[{"kid":"wrap","kty":"oct"}],"nonce":"n-1"}`
	rd := base64.StdEncoding.EncodeToString([]byte(rtJSON))
	post := func(path, body string) string {
		return "wget -qO- --header 'Content-Type: application/json' --post-data '" + body + "' http://localhost:8080" + path
	}
	probe := strings.Join([]string{
		"q() { echo \"<<<$1\"; shift; \"$@\"; echo; echo \">>>\"; }",
		"q status wget -qO- http://localhost:8080/status",
		`q raw ` + post("/attest/raw", `{"runtime_data": "`+rd+`"}`),
		`q combined ` + post("/attest/combined", `{"runtime_data": "`+rd+`"}`),
		`q maa ` + post("/attest/maa", `{"maa_endpoint": "`+asHost+`", "runtime_data": "`+rd+`"}`),
		`q release ` + post("/key/release", `{"maa_endpoint": "`+asHost+`", "akv_endpoint": "`+addr+`", "kid": "skr-key"}`),
		// A refusal's body: wget shows none, so speak HTTP with nc.
		`export body='{"maa_endpoint": "sharedeus2.eus2.attest.azure.net", "runtime_data": "` + rd + `"}'`,
		`q other-maa sh -c "printf 'POST /attest/maa HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \"\${#body}\" \"\$body\" | nc localhost 8080"`,
	}, "\n")
	pod := secretPod("skr", env.busybox, base64.StdEncoding.EncodeToString(kbsCA), addr, probe)
	pod = strings.Replace(pod, "  annotations:\n", "  annotations:\n    cocoon.dev/skr: \"true\"\n    cocoon.dev/attestation-service: "+asURL+
		"\n    cocoon.dev/attestation-service-ca: "+base64.StdEncoding.EncodeToString(asCA)+"\n", 1)
	p := x.pod(pod)
	x.mustRun(0, "policy", "generate", p)
	runOut, errs := x.mustRun(0, "run", p)
	got := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<<<(\S+)\n(.*?)\n?>>>`).FindAllStringSubmatch(runOut, -1) {
		got[m[1]] = strings.TrimSpace(m[2])
	}
	if got["status"] != `{"message":"Status OK"}` {
		t.Errorf("/status: %q (stderr %s)", got["status"], errs)
	}
	want := sha256.Sum256([]byte(rtJSON))
	var raw struct{ Report string }
	if err := json.Unmarshal([]byte(got["raw"]), &raw); err != nil || len(raw.Report) < 2*0x90 || raw.Report[2*0x50:2*0x70] != hex.EncodeToString(want[:]) || raw.Report[2*0x70:2*0x90] != strings.Repeat("00", 32) {
		t.Errorf("/attest/raw: REPORT_DATA is not SHA-256(runtime_data), zero-padded: %.300s", got["raw"])
	}
	var comb map[string]string
	if err := json.Unmarshal([]byte(got["combined"]), &comb); err != nil || len(comb["endorsed_tcb"]) != 16 || comb["evidence"] == "" {
		t.Errorf("/attest/combined: %.300s", got["combined"])
	} else if chain, _ := base64.StdEncoding.DecodeString(comb["endorsements"]); !strings.Contains(string(chain), "BEGIN CERTIFICATE") {
		t.Errorf("/attest/combined endorsements are not a PEM chain")
	}
	// The MAA token: verified with the service's published keys.
	var tok struct{ Token string }
	if err := json.Unmarshal([]byte(got["maa"]), &tok); err != nil || tok.Token == "" {
		t.Fatalf("/attest/maa: %q", got["maa"])
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(asCA)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(asURL + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	var ks jose.JSONWebKeySet
	json.NewDecoder(resp.Body).Decode(&ks)
	resp.Body.Close()
	jws, err := jose.ParseSignedCompact(tok.Token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384})
	if err != nil {
		t.Fatal(err)
	}
	keys := ks.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatal("the token's key is not at /certs")
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	hash := policyHash(t, p)
	if claims["x-ms-attestation-type"] != "sevsnpvm" || claims["x-ms-sevsnpvm-hostdata"] != hash || claims["x-cocoon-simulated"] != true {
		t.Errorf("MAA claims: %v", claims)
	}
	if rt, _ := claims["x-ms-runtime"].(map[string]any); rt["nonce"] != "n-1" {
		t.Errorf("x-ms-runtime: %v", claims["x-ms-runtime"])
	}
	// The released key is the broker's, with its private part.
	var rel struct{ Key string }
	if err := json.Unmarshal([]byte(got["release"]), &rel); err != nil {
		t.Fatalf("/key/release: %q", got["release"])
	}
	var jwk map[string]any
	if err := json.Unmarshal([]byte(rel.Key), &jwk); err != nil || jwk["n"] != created.PublicJWK["n"] || jwk["d"] == nil {
		t.Errorf("/key/release key is not the created key with its private part")
	}
	if !strings.Contains(got["other-maa"], "403") || !strings.Contains(got["other-maa"], `{"error":"attestation failed: maa_endpoint`) {
		t.Errorf("another MAA endpoint: %q", got["other-maa"])
	}

}
