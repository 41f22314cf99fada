package agent

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"cocoon.dev/cocoon/kbs/protocol"
)

// TestSKRRoutes: the SKR sidecar's shapes and statuses, and every refusal
// before the TEE is asked or a broker is called.
func TestSKRRoutes(t *testing.T) {
	att := &countingAttester{}
	a, _ := startAgentWith(t, func(c *Config) { c.Attester = att; c.Enforcer = testEnforcer{} })
	h := a.skrAPI()
	do := func(remote, method, path, body string) (int, map[string]string) {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var m map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, m
	}
	const lo = "127.0.0.1:5000"
	if code, m := do(lo, http.MethodGet, "/status", ""); code != 200 || m["message"] != "Status OK" {
		t.Errorf("/status: %d %v", code, m)
	}
	rd := []byte(`{"nonce":"x"}`)
	code, m := do(lo, http.MethodPost, "/attest/raw", `{"runtime_data": "`+base64.StdEncoding.EncodeToString(rd)+`"}`)
	want := sha256.Sum256(rd)
	if code != 200 || len(m["report"]) < 2*0x90 || m["report"][2*0x50:2*0x90] != hex.EncodeToString(want[:])+strings.Repeat("00", 32) {
		t.Errorf("/attest/raw: %d %v", code, m)
	}
	cases := []struct {
		name, remote, method, path, body string
		code                             int
		detail                           string
	}{
		{"pod-network peer", "10.0.0.5:5000", http.MethodPost, "/attest/raw", `{"runtime_data": "eA=="}`, 403, ""},
		{"no runtime_data", lo, http.MethodPost, "/attest/raw", `{}`, 400, `"runtime_data" is required`},
		{"not base64", lo, http.MethodPost, "/attest/combined", `{"runtime_data": "!!"}`, 400, "base64"},
		{"not JSON", lo, http.MethodPost, "/attest/maa", `nope`, 400, "invalid request format"},
		{"maa without a pinned service", lo, http.MethodPost, "/attest/maa", `{"maa_endpoint": "a.attest.azure.net", "runtime_data": "e30="}`, 403, "pins no attestation service"},
		{"release without kid", lo, http.MethodPost, "/key/release", `{"maa_endpoint": "m", "akv_endpoint": "v"}`, 400, `"kid" is required`},
		{"release with a bad kid", lo, http.MethodPost, "/key/release", `{"maa_endpoint": "m", "akv_endpoint": "v", "kid": "../x"}`, 400, "kid"},
		{"release without a broker", lo, http.MethodPost, "/key/release", `{"maa_endpoint": "m", "akv_endpoint": "v", "kid": "k"}`, 403, "secure key release failed"},
		{"unknown route", lo, http.MethodGet, "/attest", "", 404, "not a route"},
	}
	for _, tc := range cases {
		before := att.calls.Load()
		code, m := do(tc.remote, tc.method, tc.path, tc.body)
		if code != tc.code {
			t.Errorf("%s: %d %v, want %d", tc.name, code, m, tc.code)
		}
		if tc.detail != "" && !strings.Contains(m["error"], tc.detail) {
			t.Errorf("%s: error %q does not say %q", tc.name, m["error"], tc.detail)
		}
		if att.calls.Load() != before {
			t.Errorf("%s: refused, yet the TEE was asked for a report", tc.name)
		}
	}
}

func TestSKRNames(t *testing.T) {
	for _, tc := range []struct {
		kid, name string
	}{
		{"mykey", "mykey"},
		{"https://myvault.vault.azure.net/keys/mykey", "mykey"},
		{"https://myvault.vault.azure.net/keys/mykey/0123abcd", "mykey"},
		{"../etc", ""},
		{"", ""},
		{strings.Repeat("a", 128), ""},
	} {
		got, err := protocol.KeyVaultName(tc.kid)
		if (tc.name == "") != (err != nil) || got != tc.name {
			t.Errorf("KeyVaultName(%q) = %q, %v", tc.kid, got, err)
		}
	}
	for _, tc := range []struct {
		pinned, given string
		same          bool
	}{
		{"https://kbs.example:8443", "kbs.example:8443", true},
		{"https://kbs.example", "kbs.example", true},
		{"https://kbs.example", "https://kbs.example/", true},
		{"https://kbs.example:443", "KBS.example", true},
		{"https://kbs.example:8443", "kbs.example", false},
		{"https://kbs.example", "evil.example", false},
		{"https://kbs.example", "", false},
	} {
		if got := sameEndpoint(tc.pinned, tc.given); got != tc.same {
			t.Errorf("sameEndpoint(%q, %q) = %v", tc.pinned, tc.given, got)
		}
	}
}

func FuzzSKRKeyName(f *testing.F) {
	f.Add("https://v.vault.azure.net/keys/k/1")
	f.Add("k")
	f.Fuzz(func(t *testing.T, kid string) {
		name, err := protocol.KeyVaultName(kid)
		if err == nil && (name == "" || strings.ContainsAny(name, "/.?")) {
			t.Fatalf("%q gave %q", kid, name)
		}
	})
}
