package kbs_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/testsim"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/as"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/kbs"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
	"cocoon.dev/cocoon/token"
)

func authority(t testing.TB) *sim.Authority { return testsim.Authority(t) }

// simAttester is an in-process attester for one simulated launch.
type simAttester struct {
	auth   *sim.Authority
	launch sim.Launch
	tamper bool
}

func (s *simAttester) Kind() tee.Kind { return tee.Sim }

func (s *simAttester) Evidence(_ context.Context, rd [64]byte) (*tee.Evidence, error) {
	r, err := s.auth.Report(s.launch, rd)
	if err != nil {
		return nil, err
	}
	if s.tamper {
		r[0x90] ^= 1
	}
	return &tee.Evidence{TEE: tee.Sim, Report: r, Certs: map[string][]byte{"vcek": s.auth.Vcek.Raw}}, nil
}

type fixture struct {
	srv      *httptest.Server
	admin    *client.Admin
	store    *kbs.BoltStore
	audit    *bytes.Buffer
	auditMu  sync.Mutex
	adminKey ed25519.PrivateKey
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func newFixture(t testing.TB, allowSim bool, mod func(*kbs.Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := kbs.OpenBoltStore(filepath.Join(dir, "db"), bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	signer, _ := token.NewSigner("", jose.ES256, 5*time.Minute)
	svc, err := as.New(context.Background(), as.Config{Signer: signer, Issuer: "kbs", Verify: attest.Options{Offline: true, TrustSim: true, SimRoots: authority(t).RootsPEM()}})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	f := &fixture{store: store, audit: &bytes.Buffer{}, adminKey: priv}
	cfg := kbs.Config{Store: store, Attestation: svc, Signer: signer, AdminKey: pub, AllowSim: allowSim,
		Audit: lockedBuf{&f.auditMu, f.audit}, MaxBody: 64 << 10}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := kbs.NewServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(srv.Handler())
	t.Cleanup(f.srv.Close)
	f.admin = &client.Admin{URL: f.srv.URL, HTTP: f.srv.Client(), Key: priv}
	return f
}

func (f *fixture) auditLog() string {
	f.auditMu.Lock()
	defer f.auditMu.Unlock()
	return f.audit.String()
}

func (f *fixture) client(att tee.Attester) *client.Client {
	return &client.Client{URL: f.srv.URL, HTTP: f.srv.Client(), Attester: att}
}

func TestReleaseEndToEnd(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	if err := f.admin.Put(ctx, "app/key/db", []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	got, err := f.client(&simAttester{auth: authority(t)}).Resource(ctx, "app", "key", "db")
	if err != nil || string(got) != "s3cret" {
		t.Fatalf("resource: %q %v", got, err)
	}
	if strings.Contains(f.auditLog(), "s3cret") {
		t.Error("the audit log contains the secret")
	}
	if _, err := f.client(&simAttester{auth: authority(t)}).Resource(ctx, "app", "key", "nope"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), kbs.ErrorTypePrefix+"ResourceNotFound") {
		t.Errorf("missing resource: %v", err)
	}
}

func TestDefaultPolicyRefusesSim(t *testing.T) {
	f := newFixture(t, false, nil)
	ctx := context.Background()
	f.admin.Put(ctx, "app/key/db", []byte("s3cret"))
	_, err := f.client(&simAttester{auth: authority(t)}).Resource(ctx, "app", "key", "db")
	if err == nil || !strings.Contains(err.Error(), "simulated TEE") {
		t.Fatalf("sim under the default policy: %v", err)
	}
	if !strings.Contains(f.auditLog(), `"verdict":"denied"`) {
		t.Errorf("audit: %s", f.auditLog())
	}
}

func TestPolicyPinsHostData(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	f.admin.Put(ctx, "app/key/db", []byte("s3cret"))
	good := sim.Launch{HostData: [32]byte{1, 2, 3}}
	pol := `package policy
import rego.v1
default allow := false
allow if input.submods.cpu0["ear.veraison.annotated-evidence"].host_data == "` + strings.Repeat("0", 0) + hex32(good.HostData) + `"
reasons contains sprintf("host_data %s is not the pinned policy", [input.submods.cpu0["ear.veraison.annotated-evidence"].host_data]) if not allow
`
	if err := f.admin.SetPolicy(ctx, []byte(pol)); err != nil {
		t.Fatal(err)
	}
	if got, err := f.client(&simAttester{auth: authority(t), launch: good}).Resource(ctx, "app", "key", "db"); err != nil || string(got) != "s3cret" {
		t.Fatalf("pinned workload: %v", err)
	}
	_, err := f.client(&simAttester{auth: authority(t), launch: sim.Launch{HostData: [32]byte{9}}}).Resource(ctx, "app", "key", "db")
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), kbs.ErrorTypePrefix+"PolicyDeny") {
		t.Fatalf("other workload: %v", err)
	}
	if !strings.Contains(f.auditLog(), "is not the pinned policy") {
		t.Errorf("the audit log does not say why: %s", f.auditLog())
	}
	if p, _ := f.admin.Policy(ctx); !strings.Contains(p, "pinned policy") {
		t.Errorf("policy get: %s", p)
	}
	if err := f.admin.SetPolicy(ctx, []byte("not rego {")); err == nil {
		t.Error("a broken policy was accepted")
	}
}

func hex32(b [32]byte) string {
	const h = "0123456789abcdef"
	out := make([]byte, 64)
	for i, c := range b {
		out[2*i], out[2*i+1] = h[c>>4], h[c&15]
	}
	return string(out)
}

// rawClient runs the raw protocol for negative tests.
type rawClient struct {
	t    *testing.T
	f    *fixture
	hc   *http.Client
	priv *ecdsa.PrivateKey
}

func newProtocol(t *testing.T, f *fixture) *rawClient {
	jar, _ := cookiejar.New(nil)
	hc := *f.srv.Client()
	hc.Jar = jar
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &rawClient{t: t, f: f, hc: &hc, priv: k}
}

func (p *rawClient) post(path string, body any) (int, map[string]any) {
	var r io.Reader
	switch b := body.(type) {
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(body)
		r = bytes.NewReader(j)
	}
	resp, err := p.hc.Post(p.f.srv.URL+path, "application/json", r)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func (p *rawClient) auth() string {
	code, m := p.post("/kbs/v0/auth", map[string]any{"version": "0.4.0", "tee": "sim", "extra-params": ""})
	if code != 200 {
		p.t.Fatalf("auth: %d %v", code, m)
	}
	return m["nonce"].(string)
}

func (p *rawClient) pub() map[string]any {
	j, _ := jose.JSONWebKey{Key: &p.priv.PublicKey}.MarshalJSON()
	var m map[string]any
	json.Unmarshal(j, &m)
	return m
}

// attestBody makes evidence binding {nonce, key}; bindKey is the key in the
// REPORT_DATA, sent the one in the request.
func (p *rawClient) attestBody(nonce string, bound, sent map[string]any, tamper bool) map[string]any {
	canon, _ := tee.CanonicalJSON(map[string]any{"nonce": nonce, "tee-pubkey": bound})
	ev, _ := (&simAttester{auth: authority(p.t), tamper: tamper}).Evidence(context.Background(), tee.BindKeyBroker.ReportData(canon))
	evJSON, _ := json.Marshal(ev)
	return map[string]any{"runtime-data": map[string]any{"nonce": nonce, "tee-pubkey": sent}, "tee-evidence": json.RawMessage(evJSON)}
}

func TestProtocolNegatives(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	f := newFixture(t, true, func(c *kbs.Config) { c.SessionTTL = 5 * time.Minute; c.Now = clock.Now })
	ctx := context.Background()
	f.admin.Put(ctx, "app/key/db", []byte("s3cret"))
	p := newProtocol(t, f)
	p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody("wrong-nonce", p.pub(), p.pub(), false)); code != 401 || !strings.Contains(m["detail"].(string), "not this session's nonce") {
		t.Errorf("wrong nonce: %d %v", code, m)
	}
	n := p.auth()
	code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false))
	if code != 200 {
		t.Fatalf("attest: %d %v", code, m)
	}
	// A repeated attest on an attested session answers its token (Trustee).
	if code, again := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false)); code != 200 || again["token"] != m["token"] {
		t.Errorf("repeated attest: %d %v", code, again)
	}
	// A nonce spent by a failed attestation is not taken again.
	n = p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), true)); code != 401 {
		t.Errorf("tampered evidence: %d %v", code, m)
	}
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false)); code != 401 || !strings.Contains(m["detail"].(string), "already used") {
		t.Errorf("reused nonce: %d %v", code, m)
	}
	// Evidence whose REPORT_DATA binds another key than the one sent.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oj, _ := jose.JSONWebKey{Key: &other.PublicKey}.MarshalJSON()
	var otherPub map[string]any
	json.Unmarshal(oj, &otherPub)
	n = p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, otherPub, p.pub(), false)); code != 401 || !strings.Contains(m["detail"].(string), "report_data") {
		t.Errorf("unbound key: %d %v", code, m)
	}
	n = p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), true)); code != 401 || m["type"] != kbs.ErrorTypePrefix+"AttestationError" {
		t.Errorf("tampered evidence: %d %v", code, m)
	}
	n = p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, map[string]any{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, false)); code != 401 || !strings.Contains(m["detail"].(string), "tee-pubkey") {
		t.Errorf("malformed JWK: %d %v", code, m)
	}
	if code, m := p.post("/kbs/v0/attest", bytes.Repeat([]byte("a"), 100<<10)); code != 401 || m["type"] != kbs.ErrorTypePrefix+"AttestationError" {
		t.Errorf("garbage body: %d %v", code, m)
	}
	big := []byte(`{"runtime-data": {"nonce": "` + strings.Repeat("a", 2<<20) + `"}}`)
	if code, m := p.post("/kbs/v0/attest", big); code != 413 || m["type"] != kbs.ErrorTypePrefix+"PayloadTooLarge" {
		t.Errorf("oversize body: %d %v", code, m)
	}
	// A session cookie of another client is not ours: a fresh client has none.
	q := newProtocol(t, f)
	resp, _ := q.hc.Get(f.srv.URL + "/kbs/v0/resource/app/key/db")
	if resp.StatusCode != 401 {
		t.Errorf("no session: %d", resp.StatusCode)
	}
	// Another session's cookie: a session that did not attest.
	q.auth()
	resp, _ = q.hc.Get(f.srv.URL + "/kbs/v0/resource/app/key/db")
	if resp.StatusCode != 401 {
		t.Errorf("unattested session: %d", resp.StatusCode)
	}
	// Expired session.
	n = p.auth()
	clock.Advance(5*time.Minute + time.Second)
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false)); code != 401 || !strings.Contains(m["detail"].(string), "expired") {
		t.Errorf("expired session: %d %v", code, m)
	}
	// A token from an untrusted issuer as bearer.
	stranger, _ := token.NewSigner("", jose.ES256, time.Minute)
	if stranger == nil {
		t.Fatal("no signer for the forged token")
	}
	forged, err := stranger.Sign(&token.EAR{Profile: token.Profile, IssuedAt: time.Now().Unix(), Expiry: time.Now().Add(time.Minute).Unix(),
		Submods: map[string]token.Appraisal{"cpu0": {Status: "affirming", KeyAttestation: mustKeyAttestation(t, p.pub())}}})
	if err != nil || strings.Count(forged, ".") != 2 {
		t.Fatalf("the forged token was not made (%v): %q", err, forged)
	}
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+"/kbs/v0/resource/app/key/db", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+forged)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the forged token was not sent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("untrusted issuer: %d", resp.StatusCode)
	}
	// Admin without and with a wrong key: 401, nothing stored.
	for _, key := range []ed25519.PrivateKey{nil, func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }()} {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/kbs/v0/resource/app/key/evil", strings.NewReader("x"))
		if key != nil {
			tok, _ := protocol.AdminToken(key)
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, _ := http.DefaultClient.Do(req)
		if resp.StatusCode != 401 {
			t.Errorf("admin with key %v: %d", key != nil, resp.StatusCode)
		}
	}
	if _, _, err := f.store.Get(ctx, "app/key/evil", 0); err == nil {
		t.Error("an unauthenticated put stored something")
	}
	// Path traversal is refused.
	if _, err := protocol.ResourcePath("..", "key", "x"); err == nil {
		t.Error("'..' accepted")
	}
}

// TestJWEInterop decrypts the broker's response with go-jose directly.
func TestJWEInterop(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	j, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
	var pub map[string]any
	json.Unmarshal(j, &pub)
	out, err := kbs.EncryptTo(pub, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	var flat map[string]any
	if err := json.Unmarshal(out, &flat); err != nil || flat["ciphertext"] == nil || flat["protected"] == nil || flat["recipients"] != nil {
		t.Fatalf("not a flattened JWE: %s", out)
	}
	prot, _ := base64.RawURLEncoding.DecodeString(flat["protected"].(string))
	if !strings.Contains(string(prot), `"enc":"A256GCM"`) {
		t.Errorf("protected header %s", prot)
	}
	obj, err := jose.ParseEncryptedJSON(string(out), []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := obj.Decrypt(k)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("decrypt: %q %v", pt, err)
	}
}

func TestStoreConcurrent(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				p := "load/k/" + string(rune('a'+w)) + string(rune('a'+i))
				if err := f.admin.Put(ctx, p, []byte(p)); err != nil {
					t.Error(err)
				}
				if b, err := f.admin.Get(ctx, p); err != nil || string(b) != p {
					t.Errorf("get %s: %q %v", p, b, err)
				}
			}
		}()
	}
	wg.Wait()
	list, _ := f.admin.List(ctx)
	if len(list) != 200 {
		t.Errorf("%d resources, want 200", len(list))
	}
}

func FuzzAuthBody(f *testing.F) {
	f.Add([]byte(`{"version":"0.4.0","tee":"sim","extra-params":""}`))
	f.Add([]byte(`{"version":"1.0","tee":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := kbs.ParseAuth(bytes.NewReader(b))
		if err == nil && a.TEE != "sim" && a.TEE != "snp" && a.TEE != "tdx" {
			t.Fatalf("accepted tee %q", a.TEE)
		}
	})
}

func FuzzAttestBody(f *testing.F) {
	f.Add([]byte(`{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},"tee-evidence":{"tee":"sim","report":"AAAA"}}`))
	f.Add([]byte(`{"runtime-data":{"nonce":""}}`))
	f.Add([]byte(`{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},"tee-evidence":{"primary_evidence":{"tee":"sim","report":"AAAA"},"additional_evidence":""}}`))
	f.Add([]byte(`{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},"tee-evidence":{"primary_evidence":{"cc_eventlog":null,"quote":"AAAA"},"additional_evidence":"{\"gpu\":{}}"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = kbs.ParseAttest(bytes.NewReader(b))
	})
}

func FuzzJWK(f *testing.F) {
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`))
	f.Add([]byte(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			return
		}
		if kbs.CheckJWK(m) == nil {
			if _, err := kbs.EncryptTo(m, []byte("x")); err != nil {
				t.Fatalf("an accepted JWK cannot be encrypted to: %v", err)
			}
		}
	})
}

// attestToken runs auth + attest and returns the token.
func attestToken(tb testing.TB, f *fixture) string {
	t := &testing.T{}
	p := newProtocol(t, f)
	n := p.auth()
	code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false))
	if code != 200 {
		tb.Fatalf("attest: %d %v", code, m)
	}
	return m["token"].(string)
}

// fakeClock is an injected clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func mustKeyAttestation(t *testing.T, jwk map[string]any) *token.KeyAttestation {
	t.Helper()
	ka, err := token.NewKeyAttestation(jwk)
	if err != nil {
		t.Fatal(err)
	}
	return ka
}

// TestReleaseVersions: a release takes the newest enabled version, or the
// one ?version= pins; a disabled version is not released; the audit log
// names the version released.
func TestReleaseVersions(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	for _, v := range []string{"old secret", "new secret"} {
		if err := f.admin.Put(ctx, "app/key/db", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	p := newProtocol(t, f)
	n := p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false)); code != 200 {
		t.Fatalf("attest: %d %v", code, m)
	}
	get := func(q string) (int, string) {
		resp, err := p.hc.Get(f.srv.URL + "/kbs/v0/resource/app/key/db" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return resp.StatusCode, string(b)
		}
		pt, err := client.Decrypt(b, p.priv)
		if err != nil {
			t.Fatal(err)
		}
		return 200, string(pt)
	}
	for _, tc := range []struct{ q, want string }{{"", "new secret"}, {"?version=1", "old secret"}, {"?version=2", "new secret"}} {
		if code, got := get(tc.q); code != 200 || got != tc.want {
			t.Errorf("%q: %d %q, want %q", tc.q, code, got, tc.want)
		}
	}
	if err := f.admin.SetDisabled(ctx, "app/key/db", 2, true); err != nil {
		t.Fatal(err)
	}
	if code, got := get(""); code != 200 || got != "old secret" {
		t.Errorf("with version 2 disabled: %d %q", code, got)
	}
	if code, body := get("?version=2"); code != 404 || !strings.Contains(body, "disabled") {
		t.Errorf("disabled version pinned: %d %s", code, body)
	}
	for _, q := range []string{"?version=0", "?version=x", "?version=-1"} {
		if code, body := get(q); code != 404 || !strings.Contains(body, "version number") {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
	vs, err := f.admin.Versions(ctx, "app/key/db")
	if err != nil || len(vs) != 2 || !vs[1].Disabled {
		t.Errorf("versions: %+v %v", vs, err)
	}
	if !regexp.MustCompile(`"resource":"app/key/db","verdict":"released".*"version":1}`).MatchString(f.auditLog()) {
		t.Errorf("the audit log does not name the released version:\n%s", f.auditLog())
	}
}
