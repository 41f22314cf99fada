package attest

import (
	"context"
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
		{"version", flip(0), at, "version"},
		{"truncated", raw[:500], at, "signature data"},
	}
	for _, tc := range cases {
		if _, err := NewVerifier().VerifySGX(context.Background(), tc.b, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func FuzzSGXQuote(f *testing.F) {
	f.Add(sgxVector(f))
	f.Add([]byte{3, 0, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseSGXQuoteChain(nil, b)
	})
}
