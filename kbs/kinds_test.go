package kbs_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"cocoon.dev/cocoon/internal/testtpm"
	"cocoon.dev/cocoon/tee/azvtpm"
	"cocoon.dev/cocoon/tee/sim"
)

// kindsPolicy releases repo "enclave" only to the SGX enclave signed by
// the pinned MRSIGNER from ISVSVN 5 on, and repo "cvm" only to an Azure
// vTPM whose PCR 8 holds the pinned value; nothing else.
func kindsPolicy(mrsigner, pcr8 string) string {
	return `package policy
import rego.v1
default allow := false
ev := input.submods.cpu0["ear.veraison.annotated-evidence"]
allow if {
	data.resource.repo == "enclave"
	ev.sgx.mrsigner == "` + mrsigner + `"
	ev.sgx.isv_svn >= 5
}
allow if {
	data.resource.repo == "cvm"
	ev.azure.pcrs["8"] == "` + pcr8 + `"
}
reasons contains sprintf("%s is not released to this workload", [data.resource.repo]) if not allow
`
}

// fetch runs the protocol as guest-components does and fetches path.
func fetch(t *testing.T, c *trusteeClient, path string) (int, []byte) {
	t.Helper()
	code, ch := c.auth()
	if code != 200 {
		t.Fatalf("auth: %d %v", code, ch)
	}
	code, b := c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(ch["nonce"].(string), nil))
	if code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	code, b = c.do(http.MethodGet, "/kbs/v0/resource/"+path, nil)
	if code == 200 {
		got, err := c.decrypt(b)
		if err != nil {
			t.Fatalf("decrypt: %v", err)
		}
		return code, got
	}
	return code, b
}

// TestSGXEnclaveGetsItsSecret: an SGX enclave's quote — the attestation
// agent's {"quote"} form under tee "sgx", REPORT_DATA the SHA-384 binding —
// attests to the broker, which releases what the policy gives that
// enclave and refuses the rest, and refuses an older enclave version.
func TestSGXEnclaveGetsItsSecret(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	f.admin.Put(ctx, "enclave/key/db", []byte("enclave-secret"))
	f.admin.Put(ctx, "cvm/key/db", []byte("cvm-secret"))
	e := sim.Enclave{MRENCLAVE: sha256.Sum256([]byte("build")), MRSIGNER: sha256.Sum256([]byte("signer")), ISVProdID: 1, ISVSVN: 5}
	if err := f.admin.SetPolicy(ctx, []byte(kindsPolicy(hex.EncodeToString(e.MRSIGNER[:]), strings.Repeat("0", 64)))); err != nil {
		t.Fatal(err)
	}
	client := func(e sim.Enclave) *trusteeClient {
		c := newTrusteeClient(t, f)
		c.teeName = "sgx"
		c.primary = func(hash []byte) any {
			var rd [64]byte
			copy(rd[:], hash)
			q, err := authority(t).SGXQuote(e, rd)
			if err != nil {
				t.Fatal(err)
			}
			return map[string]string{"quote": base64.StdEncoding.EncodeToString(q)}
		}
		return c
	}
	if code, got := fetch(t, client(e), "enclave/key/db"); code != 200 || string(got) != "enclave-secret" {
		t.Fatalf("the enclave's own secret: %d %q", code, got)
	}
	if code, got := fetch(t, client(e), "cvm/key/db"); code != 401 || strings.Contains(string(got), "cvm-secret") || !strings.Contains(string(got), "PolicyDeny") {
		t.Fatalf("another workload's secret: %d %s", code, got)
	}
	old := e
	old.ISVSVN = 4
	if code, got := fetch(t, client(old), "enclave/key/db"); code != 401 || strings.Contains(string(got), "enclave-secret") {
		t.Fatalf("an older enclave version: %d %s", code, got)
	}
	if !strings.Contains(f.auditLog(), `"tee":"sgx"`) {
		t.Errorf("audit: %s", f.auditLog())
	}
}

// TestAzureVTPMGetsItsSecret: an Azure CVM's vTPM evidence — collected by
// cocoon's attester from a real TPM implementation (swtpm) behind the
// simulated paravisor, under tee "az-snp-vtpm", the binding in the quote's
// qualifying data — attests to the broker, which releases what the policy
// gives that PCR state and refuses the rest and other PCR states; a quote
// over another nonce (a replay) is refused.
func TestAzureVTPMGetsItsSecret(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	f.admin.Put(ctx, "enclave/key/db", []byte("enclave-secret"))
	f.admin.Put(ctx, "cvm/key/db", []byte("cvm-secret"))
	l := sim.Launch{HostData: sha256.Sum256([]byte("cvm"))}
	pv, err := authority(t).NewParavisor(testtpm.Start(t), l)
	if err != nil {
		t.Fatal(err)
	}
	att := azvtpm.NewSNP(pv, func(context.Context) ([]byte, error) { return pv.VCEK(), nil })
	// The workload's init data (its policy) is measured into PCR 8.
	if err := azvtpm.ExtendPCR(pv, azvtpm.InitDataPCR, sha256.Sum256([]byte("init data"))); err != nil {
		t.Fatal(err)
	}
	pcrs, err := azvtpm.ReadPCRs(pv)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(pcrs[8]) == strings.Repeat("0", 64) {
		t.Fatal("PCR 8 was not extended")
	}
	if err := f.admin.SetPolicy(ctx, []byte(kindsPolicy(strings.Repeat("0", 64), hex.EncodeToString(pcrs[8])))); err != nil {
		t.Fatal(err)
	}
	var replay any
	client := func() *trusteeClient {
		c := newTrusteeClient(t, f)
		c.teeName = "az-snp-vtpm"
		c.primary = func(hash []byte) any {
			if replay != nil {
				return replay
			}
			ev, err := att.Collect(ctx, hash)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(ev)
			return json.RawMessage(b)
		}
		return c
	}
	if code, got := fetch(t, client(), "cvm/key/db"); code != 200 || string(got) != "cvm-secret" {
		t.Fatalf("the CVM's own secret: %d %q", code, got)
	}
	if code, got := fetch(t, client(), "enclave/key/db"); code != 401 || strings.Contains(string(got), "enclave-secret") {
		t.Fatalf("another workload's secret: %d %s", code, got)
	}
	// Other init data measured into PCR 8: not the pinned state.
	if err := azvtpm.ExtendPCR(pv, azvtpm.InitDataPCR, sha256.Sum256([]byte("other init data"))); err != nil {
		t.Fatal(err)
	}
	if code, got := fetch(t, client(), "cvm/key/db"); code != 401 || strings.Contains(string(got), "cvm-secret") {
		t.Fatalf("another PCR state: %d %s", code, got)
	}
	// A replay: evidence made for one session's nonce, sent in another.
	ev, err := att.Collect(ctx, make([]byte, 48))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(ev)
	replay = json.RawMessage(b)
	c := client()
	code, ch := c.auth()
	if code != 200 {
		t.Fatal(code)
	}
	code, body := c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(ch["nonce"].(string), nil))
	if code != 401 || !strings.Contains(string(body), "qualifying data") {
		t.Fatalf("replayed evidence: %d %s", code, body)
	}
	if code, _ := c.do(http.MethodGet, "/kbs/v0/resource/cvm/key/db", nil); code != 401 {
		t.Fatalf("a resource after a refused attestation: %d", code)
	}
}
