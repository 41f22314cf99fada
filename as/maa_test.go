package as

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/as/maa"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func maaBody(t *testing.T, runtimeData []byte, reportData [64]byte) *maa.Request {
	t.Helper()
	raw, err := authority(t).Report(sim.Launch{HostData: [32]byte{7}}, reportData)
	if err != nil {
		t.Fatal(err)
	}
	req, err := maa.NewRequest(raw, [][]byte{authority(t).Vcek.Raw}, runtimeData)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestMAARoute: the SKR sidecar's MAA request gets a token with MAA's
// claim names, signed with a key the service publishes at /certs; evidence
// bound to other data, or for another consumer, gets MAA's error shape.
func TestMAARoute(t *testing.T) {
	f := newFixture(t, nil)
	rd := []byte(`{"keys":[{"kid":"k","kty":"oct"}],"nonce":"n1"}`)
	code, out := f.post(t, maa.Path+"?api-version="+maa.APIVersion, maaBody(t, rd, maa.ReportData(rd)))
	if code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	tok, _ := out["token"].(string)
	resp, err := http.Get(f.srv.URL + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	var ks jose.JSONWebKeySet
	json.NewDecoder(resp.Body).Decode(&ks)
	resp.Body.Close()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.ES384})
	if err != nil {
		t.Fatal(err)
	}
	keys := ks.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("/certs lacks the token's key %q", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	json.Unmarshal(payload, &c)
	want := maa.ReportData(rd)
	checks := map[string]any{
		"x-ms-attestation-type":       "sevsnpvm",
		"x-ms-sevsnpvm-hostdata":      "07" + strings.Repeat("00", 31),
		"x-ms-sevsnpvm-is-debuggable": false,
		"x-ms-sevsnpvm-reportdata":    hex.EncodeToString(want[:]),
		"x-cocoon-simulated":          true,
	}
	for k, v := range checks {
		if c[k] != v {
			t.Errorf("claim %s = %v, want %v", k, c[k], v)
		}
	}
	rt, _ := c["x-ms-runtime"].(map[string]any)
	if rt["nonce"] != "n1" || rt["keys"] == nil {
		t.Errorf("x-ms-runtime %v", c["x-ms-runtime"])
	}
	for _, k := range []string{"x-ms-sevsnpvm-launchmeasurement", "x-ms-sevsnpvm-vmpl", "exp", "iat"} {
		if _, ok := c[k]; !ok {
			t.Errorf("no claim %s", k)
		}
	}

	// Refusals: MAA's {"error": {"code", "message"}}.
	other := []byte(`{"nonce":"n2"}`)
	bad := []struct {
		name, path string
		body       any
		wantCode   string
	}{
		{"runtime data not bound", maa.Path + "?api-version=" + maa.APIVersion, maaBody(t, other, maa.ReportData(rd)), "InvalidParameter"},
		{"bound for the attestation service", maa.Path + "?api-version=" + maa.APIVersion, maaBody(t, rd, tee.BindAttestationService.ReportData(rd)), "InvalidParameter"},
		{"no api-version", maa.Path, maaBody(t, rd, maa.ReportData(rd)), "MissingApiVersion"},
		{"not a request", maa.Path + "?api-version=" + maa.APIVersion, map[string]any{"report": "!!"}, "InvalidParameter"},
	}
	for _, b := range bad {
		code, out := f.post(t, b.path, b.body)
		e, _ := out["error"].(map[string]any)
		if code != 400 || e["code"] != b.wantCode || e["message"] == "" || out["token"] != nil {
			t.Errorf("%s: %d %v", b.name, code, out)
		}
	}
}
