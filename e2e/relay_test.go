package e2e

import (
	"bytes"
	"cocoon.dev/cocoon/kbs"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/tee"
)

// TestEvidenceRelayRefused plays the relay attack of a host that controls
// the sandbox's agent API: it runs the key broker's protocol (and the
// attestation service's) with a key pair of its own, has the pod's agent
// make evidence over that protocol's runtime data through every path the
// host reaches (the agent API's GetEvidence with each binding, the envelope
// relabelled, `cocoon attest`), and presents it. Every attempt is refused,
// the audit log says why, and neither the pod's secret nor its encrypted
// volume's key is ever released; the pod itself still gets its secret.
func TestEvidenceRelayRefused(t *testing.T) {
	x := newH(t)
	asURL := x.startAS("--trust-sim")
	state, addr := filepath.Join(t.TempDir(), "kbs"), freeAddr(t)
	x.startKBS(state, addr, "--allow-sim", "--as", asURL)
	for res, val := range map[string]string{"kbs:///app/db/password": "the-db-password", "kbs:///app/volume/key": "volume-key-material"} {
		f := filepath.Join(t.TempDir(), "s")
		os.WriteFile(f, []byte(val), 0o600)
		x.mustRun(0, "kbs", "put", res, f, "--state", state)
	}
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	get := "echo secret=$(wget -qO- http://127.0.0.1:8006/cdh/resource/app/db/password); exec sleep 1000"
	p := x.pod(secretPod("relay", env.busybox, base64.StdEncoding.EncodeToString(ca), addr, get))
	x.mustRun(0, "policy", "generate", p)
	x.mustRun(0, "run", "-d", p)
	x.waitContainerState("relay", "app", "running")
	ctx := context.Background()
	cl := x.dialAgent("relay")

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no CA in ca.pem")
	}
	kbsURL := "https://" + addr
	hostKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubJSON, _ := jose.JSONWebKey{Key: &hostKey.PublicKey}.MarshalJSON()
	var pub map[string]any
	json.Unmarshal(pubJSON, &pub)

	// session runs auth with a fresh cookie jar and returns the client, the
	// nonce and the canonical runtime data binding the host's key.
	session := func() (*http.Client, string, []byte) {
		t.Helper()
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		code, m := postJSON(t, hc, kbsURL+"/kbs/v0/auth", map[string]any{"version": "0.4.0", "tee": "sim", "extra-params": ""})
		if code != 200 {
			t.Fatalf("auth: %d %v", code, m)
		}
		nonce, _ := m["nonce"].(string)
		canon, err := tee.CanonicalJSON(map[string]any{"nonce": nonce, "tee-pubkey": pub})
		if err != nil || nonce == "" {
			t.Fatalf("no nonce (%v): %v", err, m)
		}
		return hc, nonce, canon
	}
	fromAgent := func(b agentv1.EvidenceBinding, rd []byte) []byte {
		t.Helper()
		resp, err := cl.GetEvidence(ctx, &agentv1.GetEvidenceRequest{RuntimeData: rd, Binding: b})
		if err != nil {
			t.Fatalf("GetEvidence(%s): %v", b, err)
		}
		return resp.GetEvidence()
	}
	relabel := func(ev []byte, b tee.Binding) []byte {
		var e tee.Evidence
		if err := json.Unmarshal(ev, &e); err != nil {
			t.Fatal(err)
		}
		e.Binding = b
		out, _ := json.Marshal(&e)
		return out
	}
	paths := []struct {
		name string
		ev   func(canon []byte) []byte
		want string // in the refusal and the audit line
	}{
		{"agent API, host challenge", func(c []byte) []byte { return fromAgent(agentv1.EvidenceBinding_HOST_CHALLENGE, c) },
			"made for cocoon/v1/host-challenge"},
		{"agent API, label stripped", func(c []byte) []byte {
			return relabel(fromAgent(agentv1.EvidenceBinding_HOST_CHALLENGE, c), "")
		}, "binds this runtime data for cocoon/v1/host-challenge, not for cocoon/v1/key-broker"},
		{"agent API, label forged", func(c []byte) []byte {
			return relabel(fromAgent(agentv1.EvidenceBinding_HOST_CHALLENGE, c), tee.BindKeyBroker)
		}, "binds this runtime data for cocoon/v1/host-challenge, not for cocoon/v1/key-broker"},
		{"agent API, attestation-service nonce", func(c []byte) []byte {
			return relabel(fromAgent(agentv1.EvidenceBinding_ATTESTATION_SERVICE_NONCE, c), "")
		}, "binds the envelope's runtime data for cocoon/v1/attestation-service, not this request's for cocoon/v1/key-broker"},
		{"cocoon attest", func(c []byte) []byte {
			out, _ := x.mustRun(0, "attest", "relay", "--nonce", hex.EncodeToString(c))
			return []byte(out)
		}, "made for cocoon/v1/host-challenge"},
	}
	for _, pth := range paths {
		hc, nonce, canon := session()
		ev := pth.ev(canon)
		code, m := postJSON(t, hc, kbsURL+"/kbs/v0/attest", map[string]any{
			"runtime-data": map[string]any{"nonce": nonce, "tee-pubkey": pub}, "tee-evidence": json.RawMessage(ev)})
		if code != http.StatusUnauthorized || m["type"] != kbs.ErrorTypePrefix+kbs.ErrAttestation || !strings.Contains(m["detail"].(string), pth.want) {
			t.Errorf("%s: attest answered %d %v, want 401 AttestationError with %q", pth.name, code, m, pth.want)
		}
		if _, ok := m["token"]; ok {
			t.Errorf("%s: a token was issued", pth.name)
		}
		for _, res := range []string{"app/db/password", "app/volume/key"} {
			if code, body := getBody(t, hc, kbsURL+"/kbs/v0/resource/"+res, ""); code != http.StatusUnauthorized || bytes.Contains(body, []byte("protected")) {
				t.Errorf("%s: resource %s after a refused attest: %d %s", pth.name, res, code, body)
			}
		}
	}

	// The attestation service: evidence the host had made over its own
	// {nonce, tee-pubkey} is refused; a token over the service's nonce
	// alone (what `cocoon attest --as` gets) carries no key, and the key
	// broker, which trusts the service, releases nothing to it.
	hc := &http.Client{Timeout: 20 * time.Second}
	asCases := []struct {
		name string
		ev   func(canon []byte) []byte
	}{
		{"host challenge", func(c []byte) []byte { return fromAgent(agentv1.EvidenceBinding_HOST_CHALLENGE, c) }},
		{"relabelled for the service", func(c []byte) []byte {
			return relabel(fromAgent(agentv1.EvidenceBinding_HOST_CHALLENGE, c), tee.BindAttestationService)
		}},
		{"service nonce wrapping the host's data", func(c []byte) []byte {
			return relabel(fromAgent(agentv1.EvidenceBinding_ATTESTATION_SERVICE_NONCE, c), "")
		}},
	}
	for _, c := range asCases {
		code, ch := postJSON(t, hc, asURL+"/challenge", nil)
		if code != 200 {
			t.Fatalf("challenge: %d %v", code, ch)
		}
		structured := map[string]any{"nonce": ch["nonce"], "tee-pubkey": pub}
		canon, _ := tee.CanonicalJSON(structured)
		code, m := postJSON(t, hc, asURL+"/attestation", map[string]any{"tee": "sim", "evidence": base64.RawURLEncoding.EncodeToString(c.ev(canon)),
			"nonce": ch["nonce"], "runtime_data": map[string]any{"structured": structured}})
		if code != http.StatusForbidden || m["token"] != nil {
			t.Errorf("attestation service, %s: %d %v", c.name, code, m)
		}
	}
	tok, _ := x.mustRun(0, "attest", "relay", "--as", asURL)
	tok = strings.TrimSpace(tok)
	kc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, res := range []string{"app/db/password", "app/volume/key"} {
		code, body := getBody(t, kc, kbsURL+"/kbs/v0/resource/"+res, tok)
		if code != http.StatusUnauthorized || !bytes.Contains(body, []byte("no TEE public key")) {
			t.Errorf("keyless token for %s: %d %s", res, code, body)
		}
	}

	// Nothing was released to anyone but the pod, and the audit log says why.
	audit, _ := os.ReadFile(filepath.Join(state, "audit.log"))
	released := 0
	for _, l := range strings.Split(strings.TrimSpace(string(audit)), "\n") {
		var a struct{ Event, Verdict, Reason, Resource string }
		json.Unmarshal([]byte(l), &a)
		if a.Verdict == "released" {
			released++
			if a.Resource != "app/db/password" {
				t.Errorf("released %s", a.Resource)
			}
		}
	}
	if released != 1 {
		t.Errorf("%d releases; want the pod's one:\n%s", released, audit)
	}
	for _, want := range []string{"made for cocoon/v1/host-challenge", "not for cocoon/v1/key-broker", "the token carries no TEE public key"} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %q:\n%s", want, audit)
		}
	}
	if strings.Contains(string(audit), "the-db-password") || strings.Contains(string(audit), "volume-key-material") {
		t.Error("the audit log holds a secret")
	}
	out, _ := x.mustRun(0, "logs", "relay")
	if !strings.Contains(out, "secret=the-db-password") {
		t.Errorf("the pod itself did not get its secret: %q", out)
	}
}

func postJSON(t *testing.T, hc *http.Client, url string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	resp, err := hc.Post(url, "application/json", rd)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("POST %s: %d, not JSON: %q", url, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func getBody(t *testing.T, hc *http.Client, url, bearer string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}
