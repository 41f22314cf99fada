package as

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/testsim"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/internal/vectors"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
	"cocoon.dev/cocoon/token"
)

var evidenceDir = vectors.EvidenceDir()

func authority(t testing.TB) *sim.Authority { return testsim.Authority(t) }

type fixture struct {
	srv    *httptest.Server
	svc    *Service
	signer *token.Signer
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	signer, err := token.NewSigner("", jose.ES256, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Signer: signer, Issuer: "https://as.test", AdminToken: "admin-secret", Version: "test",
		Verify: attest.Options{Offline: true, TrustSim: true, SimRoots: authority(t).RootsPEM()}}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, svc: svc, signer: signer}
}

func (f *fixture) post(t testing.TB, path string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(f.srv.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (f *fixture) nonce(t testing.TB) string {
	t.Helper()
	code, out := f.post(t, "/challenge", nil)
	if code != 200 {
		t.Fatalf("challenge: %d %v", code, out)
	}
	return out["nonce"].(string)
}

func (f *fixture) keySet(t testing.TB) *jose.JSONWebKeySet {
	t.Helper()
	ks, err := token.LoadKeySet(context.Background(), f.srv.URL+"/.well-known/jwks.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// simRequest makes sim evidence binding {nonce, tee-pubkey}.
func simRequest(t testing.TB, nonce string, launch sim.Launch) map[string]any {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwk, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
	var pub map[string]any
	json.Unmarshal(jwk, &pub)
	structured := map[string]any{"nonce": nonce, "tee-pubkey": pub}
	canon, _ := tee.CanonicalJSON(structured)
	raw, err := authority(t).Report(launch, tee.BindAttestationService.ReportData(canon))
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := json.Marshal(&tee.Evidence{TEE: tee.Sim, Report: raw, Certs: map[string][]byte{"vcek": authority(t).Vcek.Raw}})
	return map[string]any{"tee": "sim", "evidence": base64.RawURLEncoding.EncodeToString(ev), "nonce": nonce,
		"runtime_data": map[string]any{"structured": structured}}
}

func TestRealSNPEvidenceGetsAToken(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.AllowNoNonce = true
		c.Verify.Now = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	})
	report, _ := os.ReadFile(filepath.Join(evidenceDir, "snp/milan-b-report.bin"))
	vcek, _ := os.ReadFile(filepath.Join(evidenceDir, "snp/milan-b-vcek.der"))
	req := func(r []byte) map[string]any {
		ev, _ := json.Marshal(&tee.Evidence{TEE: tee.SNP, Report: r, Certs: map[string][]byte{"vcek": vcek}})
		return map[string]any{"tee": "snp", "evidence": base64.RawURLEncoding.EncodeToString(ev)}
	}
	code, out := f.post(t, "/attestation", req(report))
	if code != 200 {
		t.Fatalf("real evidence: %d %v", code, out)
	}
	ear, err := token.Verify(context.Background(), out["token"].(string), token.VerifyOptions{KeySet: f.keySet(t), Issuer: "https://as.test"})
	if err != nil {
		t.Fatal(err)
	}
	cpu := ear.CPU()
	if !strings.HasPrefix(cpu.Evidence.Measurement, "a1f39304") || cpu.Evidence.TEE != "snp" || ear.Nonce != "" {
		t.Errorf("claims %+v", cpu.Evidence)
	}
	bad := append([]byte{}, report...)
	bad[0x95] ^= 1
	code, out = f.post(t, "/attestation", req(bad))
	if code != http.StatusForbidden || out["token"] != nil || !strings.Contains(out["detail"].(string), "signature") {
		t.Errorf("changed byte: %d %v", code, out)
	}
}

func TestNonces(t *testing.T) {
	f := newFixture(t, nil)
	n := f.nonce(t)
	body := simRequest(t, n, sim.Launch{})
	if code, out := f.post(t, "/attestation", body); code != 200 {
		t.Fatalf("first use: %d %v", code, out)
	}
	code, out := f.post(t, "/attestation", body)
	if code != http.StatusUnauthorized || out["type"] != "bad_nonce" {
		t.Errorf("replay: %d %v", code, out)
	}
	code, out = f.post(t, "/attestation", simRequest(t, "made-up", sim.Launch{}))
	if code != http.StatusUnauthorized {
		t.Errorf("unknown nonce: %d %v", code, out)
	}
	// Evidence bound to another nonce than the request's.
	n1, n2 := f.nonce(t), f.nonce(t)
	other := simRequest(t, n1, sim.Launch{})
	other["nonce"] = n2
	code, out = f.post(t, "/attestation", other)
	if code == 200 || out["token"] != nil {
		t.Errorf("nonce not bound: %d %v", code, out)
	}
	now := time.Now()
	var clockMu sync.Mutex
	short := newFixture(t, func(c *Config) {
		c.NonceTTL = time.Minute
		c.Now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	})
	n = short.nonce(t)
	clockMu.Lock()
	now = now.Add(time.Minute + time.Second)
	clockMu.Unlock()
	code, out = short.post(t, "/attestation", simRequest(t, n, sim.Launch{}))
	if code != http.StatusUnauthorized {
		t.Errorf("expired nonce: %d %v", code, out)
	}
}

func TestAppraisalAndTokens(t *testing.T) {
	f := newFixture(t, nil)
	n := f.nonce(t)
	code, out := f.post(t, "/attestation", simRequest(t, n, sim.Launch{Measurement: [48]byte{1}}))
	if code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	ear, err := token.Verify(context.Background(), out["token"].(string), token.VerifyOptions{KeySet: f.keySet(t), Nonce: n})
	if err != nil {
		t.Fatal(err)
	}
	cpu := ear.CPU()
	if cpu.Evidence.TEE != "sim" || cpu.Status != token.Warning || cpu.Vector.Hardware != 32 || cpu.KeyAttestation == nil || !isEC(cpu.KeyAttestation) {
		t.Errorf("sim appraisal %+v", cpu)
	}
	// Reference values through the admin API: a mismatch is contraindicated, with the reason.
	put := func(tok string, body string) int {
		req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/admin/reference-values", strings.NewReader(body))
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := put("", "measurements: [00]"); c != http.StatusUnauthorized {
		t.Errorf("admin without token: %d", c)
	}
	if c := put("wrong", "measurements: [00]"); c != http.StatusUnauthorized {
		t.Errorf("admin with a wrong token: %d", c)
	}
	if c := put("admin-secret", "measurements: ['"+strings.Repeat("ab", 48)+"']\nhost_data: ['"+strings.Repeat("00", 32)+"']\ntees: [sim]"); c != 200 {
		t.Fatalf("admin put: %d", c)
	}
	n = f.nonce(t)
	_, out = f.post(t, "/attestation", simRequest(t, n, sim.Launch{Measurement: [48]byte{1}}))
	ear, err = token.Verify(context.Background(), out["token"].(string), token.VerifyOptions{KeySet: f.keySet(t)})
	if err != nil {
		t.Fatal(err)
	}
	cpu = ear.CPU()
	if cpu.Status != token.Contraindicated || cpu.Vector.Executables != 96 || !strings.Contains(strings.Join(cpu.Policy.Reasons, ";"), "measurement: found 01") {
		t.Errorf("mismatch appraisal %+v %v", cpu.Vector, cpu.Policy.Reasons)
	}
	// Expiry, another key, rotation.
	tok := out["token"].(string)
	if _, err := token.Verify(context.Background(), tok, token.VerifyOptions{KeySet: f.keySet(t), Now: time.Now().Add(time.Hour)}); err == nil {
		t.Error("expired token verified")
	}
	other, _ := token.NewSigner("", jose.ES256, time.Minute)
	ks := other.JWKS()
	if _, err := token.Verify(context.Background(), tok, token.VerifyOptions{KeySet: &ks}); err == nil {
		t.Error("token verified with another issuer's keys")
	}
	oldKid := f.signer.KeyID()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/admin/rotate-key", nil)
	req.Header.Set("Authorization", "Bearer admin-secret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("rotate: %v", err)
	}
	if f.signer.KeyID() == oldKid {
		t.Fatal("rotation kept the key")
	}
	if _, err := token.Verify(context.Background(), tok, token.VerifyOptions{KeySet: f.keySet(t)}); err != nil {
		t.Errorf("a token of the retired key no longer verifies: %v", err)
	}
	// A service that does not trust the sim root refuses sim evidence.
	strict := newFixture(t, func(c *Config) { c.Verify.TrustSim = false })
	n = strict.nonce(t)
	code, out = strict.post(t, "/attestation", simRequest(t, n, sim.Launch{}))
	if code != http.StatusForbidden || !strings.Contains(out["detail"].(string), "simulated TEE") {
		t.Errorf("untrusted sim: %d %v", code, out)
	}
}

func TestEndpoints(t *testing.T) {
	f := newFixture(t, nil)
	for _, p := range []string{"/healthz", "/.well-known/openid-configuration", "/.well-known/jwks.json"} {
		resp, err := http.Get(f.srv.URL + p)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: %v %v", p, err, resp)
		}
	}
	f.post(t, "/attestation", map[string]any{"bogus": 1})
	resp, _ := http.Get(f.srv.URL + "/metrics")
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if !strings.Contains(b.String(), `cocoon_as_requests_total{path="/attestation",code="400"} 1`) || !strings.Contains(b.String(), "cocoon_as_request_duration_seconds_bucket") {
		t.Errorf("metrics:\n%s", b.String())
	}
}

func FuzzAttestationRequest(f *testing.F) {
	f.Add([]byte(`{"tee":"sim","evidence":"e30","nonce":"abc","runtime_data":{"raw":"abc"}}`))
	f.Add([]byte(`{"tee":"snp","evidence":"e30","nonce":"n","runtime_data":{"structured":{"nonce":"n","tee-pubkey":{"kty":"EC"}}},"runtime_data_hash_algorithm":"sha384"}`))
	f.Add([]byte(`{"nonce":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ParseRequest(bytes.NewReader(b), false)
		if err != nil {
			return
		}
		data, structured, err := boundData(req)
		if err != nil {
			return
		}
		if req.RuntimeDataHashAlgorithm != "" && req.RuntimeDataHashAlgorithm != "sha512" {
			t.Fatalf("hash algorithm %q accepted", req.RuntimeDataHashAlgorithm)
		}
		if structured != nil && structured["nonce"] != req.Nonce {
			t.Fatalf("structured runtime data without the request's nonce accepted: %v", structured)
		}
		if data == nil && (req.RuntimeData.Raw != "" || req.RuntimeData.Structured != nil) {
			t.Fatal("runtime data given but nothing bound")
		}
	})
}

// BenchmarkAttestation is one challenge + attestation with sim evidence
// (made before the timer) through the HTTP handler.
func BenchmarkAttestation(b *testing.B) {
	f := newFixture(b, nil)
	bodies := make([][]byte, b.N)
	for i := range bodies {
		bodies[i], _ = json.Marshal(simRequest(b, f.nonce(b), sim.Launch{}))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := http.Post(f.srv.URL+"/attestation", "application/json", bytes.NewReader(bodies[i]))
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
		resp.Body.Close()
	}
}

func isEC(ka *token.KeyAttestation) bool {
	k, err := ka.Key()
	_, ok := k.(*ecdsa.PublicKey)
	return err == nil && ok
}
