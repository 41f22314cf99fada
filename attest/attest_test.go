package attest

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"

	"cocoon.dev/cocoon/internal/vectors"
	"cocoon.dev/cocoon/tee"
)

var evidenceDir = vectors.EvidenceDir()

func readEvidence(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(evidenceDir, name))
	if err != nil {
		t.Fatalf("real evidence missing (%v); it lives in attest/testdata/evidence", err)
	}
	return b
}

func snpEvidence(t testing.TB, report, vcek string) *tee.Evidence {
	return &tee.Evidence{TEE: tee.SNP, Report: readEvidence(t, "snp/"+report), Certs: map[string][]byte{"vcek": readEvidence(t, "snp/"+vcek)}}
}

var offline = Options{Offline: true, Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}

func TestSNPRealEvidence(t *testing.T) {
	ctx := context.Background()
	c, err := Verify(ctx, snpEvidence(t, "milan-b-report.bin", "milan-b-vcek.der"), offline)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Measurement, "a1f39304") || !strings.HasSuffix(c.Measurement, "d38c") ||
		c.SNP.Policy != "0x3001f" || c.Debug || !c.SNP.PolicySMT || c.TEE != tee.SNP || c.SNP.VMPL != 0 {
		t.Errorf("claims %+v %+v", c, c.SNP)
	}
	// milan-report's policy 0xb0000 allows debugging: refused by default.
	ev := snpEvidence(t, "milan-report.bin", "milan-vcek.der")
	_, err = Verify(ctx, ev, offline)
	if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "allows debugging") {
		t.Fatalf("debug guest: %v", err)
	}
	o := offline
	o.AllowDebug = true
	c, err = Verify(ctx, ev, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Measurement, "b07af962") || !strings.HasSuffix(c.Measurement, "2b01") ||
		c.SNP.Policy != "0xb0000" || !c.Debug || c.HostData != strings.Repeat("0", 64) || c.Product == "" {
		t.Errorf("claims %+v %+v", c, c.SNP)
	}
}

// TestSNPTamper changes every byte of the signed region and of the
// signature, one at a time: each must fail verification.
func TestSNPTamper(t *testing.T) {
	ev := snpEvidence(t, "milan-b-report.bin", "milan-b-vcek.der")
	orig := ev.Report
	for i := 0; i < 0x2A0+144; i++ {
		b := append([]byte{}, orig...)
		b[i] ^= 0x01
		ev.Report = b
		if _, err := Verify(context.Background(), ev, offline); err == nil {
			t.Errorf("byte 0x%x changed and the report still verified", i)
		}
	}
}

func TestSNPSwappedVCEK(t *testing.T) {
	_, err := Verify(context.Background(), snpEvidence(t, "milan-b-report.bin", "milan-vcek.der"), offline)
	if !errors.Is(err, ErrVerification) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("swapped VCEK: %v", err)
	}
	ev := snpEvidence(t, "milan-b-report.bin", "milan-b-vcek.der")
	delete(ev.Certs, "vcek")
	if _, err := Verify(context.Background(), ev, offline); err == nil || !strings.Contains(err.Error(), "no VCEK") {
		t.Fatalf("no VCEK: %v", err)
	}
}

func TestSNPChecks(t *testing.T) {
	ctx := context.Background()
	ev := snpEvidence(t, "milan-b-report.bin", "milan-b-vcek.der")
	c, err := Verify(ctx, ev, offline)
	if err != nil {
		t.Fatal(err)
	}
	high := offline
	high.MinTCB = &kds.TCBParts{BlSpl: 99, SnpSpl: 99, UcodeSpl: 250}
	if _, err := Verify(ctx, ev, high); err == nil || !strings.Contains(err.Error(), "minimum") {
		t.Errorf("TCB below minimum: %v", err)
	}
	wrongHost := strings.Repeat("ab", 32)
	o := offline
	o.Reference = &ReferenceValues{HostData: []string{wrongHost}}
	_, err = Verify(ctx, ev, o)
	if err == nil || !strings.Contains(err.Error(), "host_data: found "+c.HostData+", expected "+wrongHost) {
		t.Errorf("host_data: %v", err)
	}
	o = offline
	o.ReportData = []byte("nonce")
	_, err = Verify(ctx, ev, o)
	if err == nil || !strings.Contains(err.Error(), "report_data: found "+c.ReportData) || !strings.Contains(err.Error(), hex.EncodeToString([]byte("nonce"))) {
		t.Errorf("report_data: %v", err)
	}
	o = offline
	o.Reference = &ReferenceValues{Measurements: []string{c.Measurement}, HostData: []string{c.HostData}, MinTCB: &TCB{Bootloader: 1}}
	if _, err := Verify(ctx, ev, o); err != nil {
		t.Errorf("matching reference values: %v", err)
	}
	o.Reference.MinTCB = &TCB{Microcode: 255}
	if _, err := Verify(ctx, ev, o); err == nil || !strings.Contains(err.Error(), "reported_tcb.microcode") {
		t.Errorf("reference min TCB: %v", err)
	}
}

func TestTDXRealQuotes(t *testing.T) {
	o := Options{Offline: true, Now: time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC), TDXCollateralDir: filepath.Join(evidenceDir, "tdx")}
	// quote-4 comes from a debug TD: refused unless debug is allowed.
	_, err := Verify(context.Background(), &tee.Evidence{TEE: tee.TDX, Report: readEvidence(t, "tdx/quote-4.dat")}, o)
	if err == nil || !strings.Contains(err.Error(), "DEBUG") {
		t.Errorf("debug TD: %v", err)
	}
	o.AllowDebug = true
	statuses := map[string]string{}
	var c *Claims
	for _, q := range []string{"spr-quote-v4.dat", "quote-4.dat"} {
		ev := &tee.Evidence{TEE: tee.TDX, Report: readEvidence(t, "tdx/"+q)}
		c, err = Verify(context.Background(), ev, o)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if c.TDX == nil || len(c.TDX.MRTD) != 96 || c.TDX.TCBStatus == "" {
			t.Errorf("%s: claims %+v", q, c.TDX)
		}
		statuses[q] = c.TDX.TCBStatus
		t.Logf("%s: fmspc %s tcb %s %s", q, c.TDX.FMSPC, c.TDX.TCBStatus, c.TDX.TCBStatusReason)
		// Any changed byte of the quote body fails.
		b := append([]byte{}, ev.Report...)
		b[100] ^= 1
		if _, err := Verify(context.Background(), &tee.Evidence{TEE: tee.TDX, Report: b}, o); err == nil {
			t.Errorf("%s: tampered quote verified", q)
		}
	}
	// The collateral matches spr-quote-v4's FMSPC; its levels do not
	// match the platform's SVNs (as go-tdx-guest's own tests find).
	if statuses["spr-quote-v4.dat"] != "Unrecognized" {
		t.Errorf("spr-quote-v4 TCB status %q, want Unrecognized", statuses["spr-quote-v4.dat"])
	}
	// Without collateral the status says so.
	o.TDXCollateralDir = ""
	c, err = Verify(context.Background(), &tee.Evidence{TEE: tee.TDX, Report: readEvidence(t, "tdx/spr-quote-v4.dat")}, o)
	if err != nil || c.TDX.TCBStatus != "NotEvaluated" {
		t.Errorf("offline without collateral: %v %+v", err, c)
	}
	// Outside the certificates' validity it fails.
	o.Now = time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := Verify(context.Background(), &tee.Evidence{TEE: tee.TDX, Report: readEvidence(t, "tdx/spr-quote-v4.dat")}, o); err == nil {
		t.Error("quote verified in 2040")
	}
}
