package attest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/vectors"
	"cocoon.dev/cocoon/tee"
)

// TestTDXQuoteV5: a real TDX 1.5 quote (version 5, body type 3; see the
// evidence README) verifies through Verify like a version 4 quote: the
// PCK chain to Intel's SGX Root CA, the QE report and its binding of the
// attestation key, the quote's signature. Changed bytes are refused.
func TestTDXQuoteV5(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "tdx", "quote-5.dat"))
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Offline: true, AllowDebug: true, Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	c, err := Verify(context.Background(), &tee.Evidence{TEE: tee.TDX, Report: raw}, o)
	if err != nil {
		t.Fatal(err)
	}
	if c.TDX == nil || c.TDX.QuoteVersion != 5 || len(c.Measurement) != 96 || c.TDX.RTMR[3] == "" || c.TDX.TCBStatus != "NotEvaluated" {
		t.Fatalf("claims %+v %+v", c, c.TDX)
	}
	flip := func(off int) []byte {
		b := append([]byte(nil), raw...)
		b[off] ^= 1
		return b
	}
	sd := 48 + 6 + 648 + 4
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"MRTD":            {flip(54 + 136), "not signed by the attestation key"},
		"quote signature": {flip(sd + 3), "not signed by the attestation key"},
		"attestation key": {flip(sd + 64 + 3), "does not bind the attestation key"},
		"QE report":       {flip(sd + 134 + 3), "not signed by the PCK key"},
		"body type":       {flip(48), "body type"},
		"truncated":       {raw[:600], "truncated"},
	} {
		if _, err := Verify(context.Background(), &tee.Evidence{TEE: tee.TDX, Report: tc.b}, o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func FuzzTDXQuoteV5(f *testing.F) {
	raw, _ := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "tdx", "quote-5.dat"))
	f.Add(raw)
	f.Add([]byte{5, 0, 2, 0, 0x81, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseTDX5(b)
	})
}
