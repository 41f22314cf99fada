package attest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/vectors"
)

func sgxVector(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "sgx", "occlum-quote-v3.dat"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSGXQuote: a real SGX DCAP quote (an Occlum enclave's; see the
// evidence README) verifies to Intel's SGX Root CA and gives the enclave's
// identity; each part changed is refused with its reason.
func TestSGXQuote(t *testing.T) {
	raw := sgxVector(t)
	at := Options{Now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true}
	c, err := NewVerifier().VerifySGX(context.Background(), raw, at)
	if err != nil {
		t.Fatal(err)
	}
	s := c.SGX
	if c.TEE != "sgx" || s == nil || len(s.MRENCLAVE) != 64 || len(s.MRSIGNER) != 64 || c.Measurement != s.MRENCLAVE || s.TCBStatus != "unknown" {
		t.Fatalf("claims %+v %+v", c, s)
	}
	t.Logf("mrenclave %s mrsigner %s prod %d svn %d debug %v", s.MRENCLAVE, s.MRSIGNER, s.ISVProdID, s.ISVSVN, c.Debug)
	// A debug enclave is refused unless allowed.
	if c.Debug {
		strict := at
		strict.AllowDebug = false
		if _, err := NewVerifier().VerifySGX(context.Background(), raw, strict); err == nil || !strings.Contains(err.Error(), "DEBUG") {
			t.Errorf("a debug enclave without --allow-debug: %v", err)
		}
	}
	flip := func(off int) []byte {
		b := append([]byte(nil), raw...)
		b[off] ^= 1
		return b
	}
	sd := 436
	cases := []struct {
		name string
		b    []byte
		o    Options
		want string
	}{
		{"report body (MRENCLAVE)", flip(48 + 64), at, "not signed by the attestation key"},
		{"quote signature", flip(sd + 5), at, "not signed by the attestation key"},
		{"attestation key", flip(sd + 64 + 5), at, "does not bind the attestation key"},
		{"QE report", flip(sd + 128 + 5), at, "not signed by the PCK key"},
		{"QE auth data", flip(sd + 578 + 1), at, "does not bind the attestation key"},
		{"after the PCK's validity", raw, Options{Now: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true}, "Root CA"},
		{"report data", raw, Options{Now: at.Now, AllowDebug: true, ReportData: []byte("other")}, "report_data"},
		{"another platform's PCK chain", swapPCKChain(t, raw), at, "PCK"},
		{"version", flip(0), at, "version"},
		{"truncated", raw[:500], at, "signature data"},
	}
	for _, tc := range cases {
		_, err := NewVerifier().VerifySGX(context.Background(), tc.b, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
		t.Logf("%s: refused: %v", tc.name, err)
	}
}

// swapPCKChain puts another platform's PCK certificate chain (the real TDX
// quote's, from another machine) in place of the SGX quote's, fixing the
// length fields, as a host that swaps certificates would.
func swapPCKChain(t *testing.T, raw []byte) []byte {
	t.Helper()
	other, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "tdx", "quote-4.dat"))
	if err != nil {
		t.Fatal(err)
	}
	begin := []byte("-----BEGIN CERTIFICATE-----")
	i, j := bytes.Index(raw, begin), bytes.Index(other, begin)
	if i < 4 || j < 0 {
		t.Fatal("no PEM chain in the quotes")
	}
	chain := other[j:]
	if k := bytes.LastIndex(chain, []byte("-----END CERTIFICATE-----")); k >= 0 {
		chain = chain[:k+len("-----END CERTIFICATE-----\n")]
	}
	out := append(append([]byte(nil), raw[:i]...), chain...)
	oldLen := binary.LittleEndian.Uint32(raw[i-4:])
	binary.LittleEndian.PutUint32(out[i-4:], uint32(len(chain)))
	sigLen := binary.LittleEndian.Uint32(raw[432:])
	binary.LittleEndian.PutUint32(out[432:], sigLen-oldLen+uint32(len(chain)))
	return out
}

func FuzzSGXQuote(f *testing.F) {
	f.Add(sgxVector(f))
	f.Add([]byte{3, 0, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseSGXQuoteChain(nil, b)
	})
}

// TestSGXTCBFromCollateral: Intel's own collateral for the quote's FMSPC
// (the TCB info, version 2, and the QE identity, both signed by Intel's
// TCB Signing key; see the evidence README) gives the real quote its TCB
// status; a changed byte of either document, expired collateral or a
// quote for another FMSPC are told apart.
func TestSGXTCBFromCollateral(t *testing.T) {
	raw := sgxVector(t)
	dir := filepath.Join(vectors.EvidenceDir(), "sgx", "collateral")
	o := Options{Now: time.Date(2024, 6, 25, 0, 0, 0, 0, time.UTC), AllowDebug: true, TDXCollateralDir: dir}
	c, err := NewVerifier().VerifySGX(context.Background(), raw, o)
	if err != nil {
		t.Fatal(err)
	}
	s := c.SGX
	t.Logf("status %s: %s", s.TCBStatus, s.TCBStatusReason)
	if s.FMSPC != "00606a000000" || s.TCBStatus != "OutOfDate" || !strings.Contains(s.TCBStatusReason, "2021-11-10") || !strings.Contains(s.TCBStatusReason, "Quoting Enclave ISVSVN") {
		t.Fatalf("status %q (%s), fmspc %s", s.TCBStatus, s.TCBStatusReason, s.FMSPC)
	}
	// Without collateral: unknown.
	o2 := o
	o2.TDXCollateralDir = ""
	if c, _ := NewVerifier().VerifySGX(context.Background(), raw, o2); c == nil || c.SGX.TCBStatus != "unknown" {
		t.Fatalf("without collateral: %+v", c)
	}
	tamper := func(file, from, to string) string {
		d := t.TempDir()
		for _, f := range []string{"tcbinfo-sgx-00606a000000.json", "qe-identity.json"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if f == file {
				if !strings.Contains(string(b), from) {
					t.Fatalf("%s has no %q", f, from)
				}
				b = []byte(strings.Replace(string(b), from, to, 1))
			}
			os.WriteFile(filepath.Join(d, f), b, 0o644)
		}
		return d
	}
	for _, tc := range []struct {
		name string
		dir  string
		now  time.Time
		want string
	}{
		{"a TCB level changed", tamper("tcbinfo-sgx-00606a000000.json", `"pcesvn":11`, `"pcesvn":10`), o.Now, "not Intel's TCB Signing key's"},
		{"the QE identity changed", tamper("qe-identity.json", `"isvsvn":8`, `"isvsvn":1`), o.Now, "not Intel's TCB Signing key's"},
		{"expired TCB info", dir, time.Date(2024, 8, 1, 0, 0, 0, 0, time.UTC), "expired"},
	} {
		oo := o
		oo.TDXCollateralDir, oo.Now = tc.dir, tc.now
		if _, err := NewVerifier().VerifySGX(context.Background(), raw, oo); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	// Collateral for other platforms only: not evaluated, and says why.
	empty := t.TempDir()
	oo := o
	oo.TDXCollateralDir = empty
	if c, err := NewVerifier().VerifySGX(context.Background(), raw, oo); err != nil || c.SGX.TCBStatus != "NotEvaluated" {
		t.Fatalf("no TCB info for the FMSPC: %v %+v", err, c)
	}
}

// FuzzSGXCollateral: any TCB info or QE identity body is parsed and
// matched against the real quote's platform without a panic.
func FuzzSGXCollateral(f *testing.F) {
	dir := filepath.Join(vectors.EvidenceDir(), "sgx", "collateral")
	for _, name := range []string{"tcbinfo-sgx-00606a000000.json", "qe-identity.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	q, err := parseSGXQuoteChain(nil, sgxVector(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var doc struct {
			TcbInfo         json.RawMessage `json:"tcbInfo"`
			EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
		}
		if json.Unmarshal(b, &doc) != nil {
			return
		}
		if doc.TcbInfo != nil {
			_, _, _ = parseSGXTCBInfo(doc.TcbInfo)
		}
		if doc.EnclaveIdentity != nil {
			_, _, _ = qeIdentityStatus(doc.EnclaveIdentity, q.qeReport, time.Date(2025, 6, 10, 0, 0, 0, 0, time.UTC))
		}
	})
}
