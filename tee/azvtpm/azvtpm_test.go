package azvtpm_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/internal/testsim"
	"cocoon.dev/cocoon/internal/testtpm"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/azvtpm"
	"cocoon.dev/cocoon/tee/sim"
)

func attester(t *testing.T) (*azvtpm.Attester, sim.Launch) {
	t.Helper()
	auth := testsim.Authority(t)
	l := sim.Launch{HostData: sha256.Sum256([]byte("policy"))}
	copy(l.Measurement[:], []byte("azure-vtpm-test-measurement"))
	pv, err := auth.NewParavisor(testtpm.Start(t), l)
	if err != nil {
		t.Fatal(err)
	}
	return azvtpm.NewSNP(pv, func(context.Context) ([]byte, error) { return pv.VCEK(), nil }), l
}

// TestAttesterOnSWTPM: the attester, talking to a real TPM implementation
// (swtpm) behind the simulated paravisor, produces evidence the verifier
// accepts under the binding asked for, with the PCRs the TPM holds; the
// same evidence is refused under another binding, for other data, and
// without trusting the simulator.
func TestAttesterOnSWTPM(t *testing.T) {
	ctx := context.Background()
	a, l := attester(t)
	data := []byte(`{"nonce":"n-1","tee-pubkey":{}}`)
	ev, err := a.Evidence(ctx, tee.BindKeyBroker.ReportData(data))
	if err != nil {
		t.Fatal(err)
	}
	if ev.TEE != tee.AzureSNP {
		t.Fatalf("kind %q", ev.TEE)
	}
	roots := testsim.Authority(t).RootsPEM()
	o := attest.Options{TrustSim: true, SimRoots: roots, Binding: tee.BindKeyBroker, BoundData: data}
	c, err := attest.Verify(ctx, ev, o)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if c.TEE != tee.Sim || !strings.Contains(c.Platform, "Azure vTPM") || c.Azure == nil || len(c.Azure.PCRs) != 24 {
		t.Fatalf("claims: %+v", c)
	}
	if c.HostData != hexOf(l.HostData[:]) {
		t.Errorf("host data %s", c.HostData)
	}
	zero := strings.Repeat("0", 64)
	if c.Azure.PCRs[0] != zero {
		t.Errorf("PCR 0 of a fresh TPM: %s", c.Azure.PCRs[0])
	}

	for _, tc := range []struct {
		name string
		o    attest.Options
		want string
	}{
		{"other data", attest.Options{TrustSim: true, SimRoots: roots, Binding: tee.BindKeyBroker, BoundData: []byte("other")}, "qualifying data"},
		{"other consumer", attest.Options{TrustSim: true, SimRoots: roots, Binding: tee.BindAttestationService, BoundData: data}, "made for another consumer"},
		{"untrusted sim", attest.Options{Binding: tee.BindKeyBroker, BoundData: data, Offline: true}, "VCEK"},
		{"no nonce", attest.Options{TrustSim: true, SimRoots: roots}, "nonce"},
		{"pcr reference", attest.Options{TrustSim: true, SimRoots: roots, Binding: tee.BindKeyBroker, BoundData: data,
			Reference: &attest.ReferenceValues{PCRs: map[int][]string{8: {strings.Repeat("ab", 32)}}}}, "pcrs[8]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := attest.Verify(ctx, ev, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

// TestRawEvidenceForKBSClients: what the in-pod /aa/evidence answers on
// Azure — runtime_data quoted as it is — verifies under the KBS protocol's
// SHA-384 binding, as Trustee checks it.
func TestRawEvidenceForKBSClients(t *testing.T) {
	a, _ := attester(t)
	data := []byte(`{"additional-evidence":"","nonce":"n","tee-pubkey":{}}`)
	b, err := a.RawEvidence(context.Background(), tee.BindSHA384.Digest(data))
	if err != nil {
		t.Fatal(err)
	}
	o := attest.Options{TrustSim: true, SimRoots: testsim.Authority(t).RootsPEM(), Binding: tee.BindSHA384, BoundData: data}
	if _, err := attest.Verify(context.Background(), &tee.Evidence{TEE: tee.AzureSNP, Report: b}, o); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RawEvidence(context.Background(), make([]byte, 65)); err == nil {
		t.Error("a 65-byte nonce was quoted")
	}
}

// TestIMDS: the VCEK and TD quote routes, as Azure documents them.
func TestIMDS(t *testing.T) {
	cert := testsim.Authority(t).Vcek.Raw
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no Metadata header", http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/metadata/THIM/amd/certification":
			json.NewEncoder(w).Encode(map[string]string{"vcekCert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}))})
		case "/acc/tdquote":
			var in struct{ Report string }
			json.NewDecoder(r.Body).Decode(&in)
			json.NewEncoder(w).Encode(map[string]string{"quote": in.Report})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	m := &azvtpm.IMDS{URL: srv.URL, HTTP: srv.Client()}
	got, err := m.VCEK(context.Background())
	if err != nil || string(got) != string(cert) {
		t.Fatalf("VCEK: %v", err)
	}
	q, err := m.TDQuote(context.Background(), []byte("td report"))
	if err != nil || string(q) != "td report" {
		t.Fatalf("TD quote: %q %v", q, err)
	}
	if _, err := (&azvtpm.IMDS{URL: srv.URL + "/nothing", HTTP: srv.Client()}).VCEK(context.Background()); err == nil {
		t.Error("a 404 gave a VCEK")
	}
}
