package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"cocoon.dev/cocoon/tee"
)

// TestCoCoEvidence: /aa/evidence as guest-components' api-server-rest
// serves it — runtime_data as given (or base64url with encoding=base64),
// zero-padded into REPORT_DATA — and every refusal reaches no report.
func TestCoCoEvidence(t *testing.T) {
	att := &countingAttester{}
	a, _ := startAgentWith(t, func(c *Config) { c.Attester = att; c.Enforcer = testEnforcer{} })
	h := a.podAPI()
	digest := bytes.Repeat([]byte{0xab}, 48)
	full := append(bytes.Repeat([]byte{1}, 63), 2)
	zeroTail := append(bytes.Repeat([]byte{3}, 40), make([]byte, 24)...)
	b64 := base64.RawURLEncoding.EncodeToString
	cases := []struct {
		name, query string
		code        int
		want        []byte // the REPORT_DATA prefix expected
		detail      string
	}{
		// The request of api-server-rest's README, byte for byte.
		{"plain string", "runtime_data=xxxx", 200, []byte("xxxx"), ""},
		{"base64url", "runtime_data=" + b64([]byte("report")) + "&encoding=base64", 200, []byte("report"), ""},
		{"sha384 digest", "runtime_data=" + b64(digest) + "&encoding=base64", 200, digest, ""},
		{"64 bytes, zero tail", "runtime_data=" + b64(zeroTail) + "&encoding=base64", 200, zeroTail, ""},
		{"missing", "", 400, nil, "runtime_data is missing"},
		{"not base64", "runtime_data=!!!&encoding=base64", 400, nil, "not base64url"},
		{"hex encoding", "runtime_data=00&encoding=hex", 400, nil, `encoding \"hex\"`},
		{"longer than REPORT_DATA", "runtime_data=" + b64(bytes.Repeat([]byte{1}, 65)) + "&encoding=base64", 400, nil, "REPORT_DATA holds 64"},
		// A full 64-byte value could be one of the agent's own bindings.
		{"64 bytes of data", "runtime_data=" + b64(full) + "&encoding=base64", 400, nil, "at most the first 48 bytes"},
		{"the agent's KBS binding", "runtime_data=" + func() string { rd := tee.BindKeyBroker.ReportData([]byte(`{"nonce":"n"}`)); return b64(rd[:]) }() + "&encoding=base64", 400, nil, "at most the first 48 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := att.calls.Load()
			r := httptest.NewRequest(http.MethodGet, "/aa/evidence?"+tc.query, nil)
			r.RemoteAddr = "127.0.0.1:40000"
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.code {
				t.Fatalf("%d %s, want %d", w.Code, w.Body, tc.code)
			}
			if tc.code != 200 {
				if att.calls.Load() != before {
					t.Error("refused, yet the TEE was asked for a report")
				}
				if !strings.Contains(w.Body.String(), tc.detail) {
					t.Errorf("the refusal %s does not say %q", w.Body, tc.detail)
				}
				return
			}
			var want [64]byte
			copy(want[:], tc.want)
			if got := att.last.Load().([64]byte); got != want {
				t.Errorf("REPORT_DATA %x, want %x", got, want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("content type %q", ct)
			}
			rep, _, err := tee.SNPFromAA(w.Body.Bytes())
			if err != nil || !bytes.Equal(rep[0x50:0x90], want[:]) {
				t.Errorf("evidence %.200s (%v): want the attestation agent's SNP evidence with REPORT_DATA %x", w.Body, err, want)
			}
		})
	}
}

// TestCoCoRoutes: the rest of api-server-rest's routes answer its shapes.
func TestCoCoRoutes(t *testing.T) {
	att := &countingAttester{}
	a, _ := startAgentWith(t, func(c *Config) { c.Attester = att; c.Enforcer = testEnforcer{} })
	h := a.podAPI()
	do := func(method, target, body string) *httptest.ResponseRecorder {
		return podRequest(h, method, target, body)
	}
	w := do(http.MethodGet, "/info", "")
	var info map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &info); w.Code != 200 || err != nil || info["tee"] != "sample" || info["feature"] != "all" || info["version"] == "" {
		t.Errorf("/info: %d %s", w.Code, w.Body)
	}
	if _, ok := info["additional_tees"]; ok {
		t.Errorf("/info lists additional_tees with none: %s", w.Body)
	}
	w = do(http.MethodGet, "/aa/additional-evidence?runtime_data=xxxx", "")
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("additional evidence: %d %q", w.Code, w.Body)
	}
	if w = do(http.MethodGet, "/aa/additional-evidence", ""); w.Code != 400 {
		t.Errorf("additional evidence without runtime_data: %d", w.Code)
	}
	w = do(http.MethodPost, "/aa/aael", `{"domain":"test","operation":"op","content":"c"}`)
	var res map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &res); w.Code != 200 || err != nil || res["success"] != "false" || !strings.Contains(res["message"], "does not support runtime measurement") {
		t.Errorf("aael: %d %s", w.Code, w.Body)
	}
	if w = do(http.MethodPost, "/aa/aael", `not json`); w.Code != 400 {
		t.Errorf("aael with a bad body: %d", w.Code)
	}
	for _, q := range []string{"", "?token_type=coco_as"} {
		if w = do(http.MethodGet, "/aa/token"+q, ""); w.Code != 400 {
			t.Errorf("token %q: %d %s", q, w.Code, w.Body)
		}
	}
	// No policy names a key broker here: the token cannot be had, and
	// nothing was attested.
	before := att.calls.Load()
	if w = do(http.MethodGet, "/aa/token?token_type=kbs", ""); w.Code == 200 || att.calls.Load() != before {
		t.Errorf("token without a broker: %d %s", w.Code, w.Body)
	}
}

func FuzzCoCoRuntimeData(f *testing.F) {
	f.Add("runtime_data=xxxx")
	f.Add("runtime_data=cmVwb3J0&encoding=base64")
	f.Add("runtime_data=" + strings.Repeat("A", 90) + "&encoding=base64")
	f.Add("encoding=hex")
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest(http.MethodGet, "/aa/evidence", nil)
		r.URL.RawQuery = q
		rd, err := cocoRuntimeData(r)
		if err != nil {
			return
		}
		out, err := rawReportData(rd)
		if err != nil {
			return
		}
		if len(rd) > 64 || !bytes.Equal(out[:len(rd)], rd) || [16]byte(out[48:]) != [16]byte{} {
			t.Fatalf("runtime data %x became REPORT_DATA %x", rd, out)
		}
	})
}

// podRequest serves one request of the pod's loopback peer.
func podRequest(h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.RemoteAddr = "127.0.0.1:40000"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
