package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha512"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"

	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

// TestCachedChainStillChecksSignature: with the chain cached, a changed
// report byte still fails.
func TestCachedChainStillChecksSignature(t *testing.T) {
	v := NewVerifier()
	ev := snpEvidence(t, "milan-b-report.bin", "milan-b-vcek.der")
	if _, err := v.Verify(context.Background(), ev, offline); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0x50, 0x90, 0xC0, 0x2A0, 0x2F0} {
		b := append([]byte{}, ev.Report...)
		b[i] ^= 1
		if _, err := v.Verify(context.Background(), &tee.Evidence{TEE: tee.SNP, Report: b, Certs: ev.Certs}, offline); err == nil {
			t.Errorf("byte 0x%x changed, cached verifier accepted it", i)
		}
	}
}

// BenchmarkVerifySNPCached is SNP verification of real evidence with the
// chain cached; BenchmarkECDSAP384Verify is the floor it is compared to.
func BenchmarkVerifySNPCached(b *testing.B) {
	v := NewVerifier()
	ev := snpEvidence(b, "milan-b-report.bin", "milan-b-vcek.der")
	ctx := context.Background()
	if _, err := v.Verify(ctx, ev, offline); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(ctx, ev, offline); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySNPUncached(b *testing.B) {
	ev := snpEvidence(b, "milan-b-report.bin", "milan-b-vcek.der")
	for i := 0; i < b.N; i++ {
		if _, err := Verify(context.Background(), ev, offline); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkECDSAP384Verify(b *testing.B) {
	ev := snpEvidence(b, "milan-b-report.bin", "milan-b-vcek.der")
	cert, err := trust.ParseCert(ev.Certs["vcek"])
	if err != nil {
		b.Fatal(err)
	}
	pub := cert.PublicKey.(*ecdsa.PublicKey)
	der, err := abi.ReportToSignatureDER(ev.Report)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha512.Sum384(abi.SignedComponent(ev.Report))
	if !ecdsa.VerifyASN1(pub, digest[:], der) {
		b.Fatal("signature does not verify")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ecdsa.VerifyASN1(pub, digest[:], der)
	}
}

func BenchmarkVerifyTDX(b *testing.B) {
	o := Options{Offline: true, Now: time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC)}
	ev := &tee.Evidence{TEE: tee.TDX, Report: readEvidence(b, "tdx/spr-quote-v4.dat")}
	v := NewVerifier()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(context.Background(), ev, o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTDXWithCollateral(b *testing.B) {
	o := Options{Offline: true, Now: time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC), TDXCollateralDir: filepath.Join(evidenceDir, "tdx")}
	ev := &tee.Evidence{TEE: tee.TDX, Report: readEvidence(b, "tdx/spr-quote-v4.dat")}
	v := NewVerifier()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(context.Background(), ev, o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSimReport(b *testing.B) {
	a := authority(b)
	l := sim.Launch{}
	var rd [64]byte
	for i := 0; i < b.N; i++ {
		if _, err := a.Report(l, rd); err != nil {
			b.Fatal(err)
		}
	}
}
