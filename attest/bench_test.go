package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/vectors"

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

// The new kinds (issue #17): each verification against the raw signature
// checks it cannot avoid, measured in the same run (bench/attest.sh prints
// the ratios).

func sgxBench(b *testing.B) (*Verifier, []byte, Options) {
	raw := sgxVector(b)
	o := Options{Now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true}
	v := NewVerifier()
	if _, err := v.VerifySGX(context.Background(), raw, o); err != nil {
		b.Fatal(err)
	}
	return v, raw, o
}

// BenchmarkVerifySGXCached is a real SGX quote with its PCK chain cached.
func BenchmarkVerifySGXCached(b *testing.B) {
	v, raw, o := sgxBench(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.VerifySGX(ctx, raw, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSGXSignatureFloor is the two P-256 signatures every SGX (and
// TDX) quote needs checked: the QE report by the PCK key, the quote by the
// attestation key.
func BenchmarkSGXSignatureFloor(b *testing.B) {
	q, err := parseSGXQuoteChain(nil, sgxVector(b))
	if err != nil {
		b.Fatal(err)
	}
	pck := q.pck[0].PublicKey.(*ecdsa.PublicKey)
	att, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.attKey...))
	if err != nil {
		b.Fatal(err)
	}
	if !verifyP256(pck, q.qeReport, q.qeSig) || !verifyP256(att, q.raw[:sgxSignedSize], q.sig) {
		b.Fatal("signatures do not verify")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		verifyP256(pck, q.qeReport, q.qeSig)
		verifyP256(att, q.raw[:sgxSignedSize], q.sig)
	}
}

// BenchmarkVerifyTDX5Cached is a real TDX 1.5 quote with its chain cached
// (its floor is BenchmarkSGXSignatureFloor's: the same two P-256 checks).
func BenchmarkVerifyTDX5Cached(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "tdx", "quote-5.dat"))
	if err != nil {
		b.Fatal(err)
	}
	ev := &tee.Evidence{TEE: tee.TDX, Report: raw}
	o := Options{Offline: true, AllowDebug: true, Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	v := NewVerifier()
	ctx := context.Background()
	if _, err := v.Verify(ctx, ev, o); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(ctx, ev, o); err != nil {
			b.Fatal(err)
		}
	}
}

func azureBench(b *testing.B, name string) (*Verifier, *AzureEvidence, []byte, Options) {
	ev, nonce := azureVector(b, name)
	o := Options{Offline: true, Now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
	v := NewVerifier()
	if _, err := v.VerifyAzure(context.Background(), ev, nonce, o); err != nil {
		b.Fatal(err)
	}
	return v, ev, nonce, o
}

// BenchmarkVerifyAzureSNPCached is real Azure vTPM evidence on SEV-SNP,
// the VCEK chain cached.
func BenchmarkVerifyAzureSNPCached(b *testing.B) {
	v, ev, nonce, o := azureBench(b, "azure-snp-vtpm/evidence-v2.json")
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.VerifyAzure(ctx, ev, nonce, o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAzureSNPSignatureFloor is what Azure SNP evidence needs
// checked: the SNP report's P-384 signature by the VCEK and the TPM
// quote's RSA-2048 signature by the attestation key.
func BenchmarkAzureSNPSignatureFloor(b *testing.B) {
	ev, _ := azureVector(b, "azure-snp-vtpm/evidence-v2.json")
	hcl, err := ParseHCLReport(ev.HCLReport)
	if err != nil {
		b.Fatal(err)
	}
	vcek := []byte(ev.VCEK)
	if blk, _ := pem.Decode(vcek); blk != nil {
		vcek = blk.Bytes
	}
	cert, err := trust.ParseCert(vcek)
	if err != nil {
		b.Fatal(err)
	}
	pub := cert.PublicKey.(*ecdsa.PublicKey)
	der, err := abi.ReportToSignatureDER(hcl.HW)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha512.Sum384(abi.SignedComponent(hcl.HW))
	ak, err := hcl.akPub()
	if err != nil {
		b.Fatal(err)
	}
	mh := sha256.Sum256(ev.TPMQuote.Message)
	if !ecdsa.VerifyASN1(pub, digest[:], der) || rsa.VerifyPKCS1v15(ak, crypto.SHA256, mh[:], ev.TPMQuote.Signature) != nil {
		b.Fatal("signatures do not verify")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ecdsa.VerifyASN1(pub, digest[:], der)
		_ = rsa.VerifyPKCS1v15(ak, crypto.SHA256, mh[:], ev.TPMQuote.Signature)
	}
}

// BenchmarkVerifyAzureTDX is real Azure vTPM evidence on TDX (a version 4
// TD quote, verified by go-tdx-guest, chain included).
func BenchmarkVerifyAzureTDX(b *testing.B) {
	v, ev, nonce, o := azureBench(b, "azure-tdx-vtpm/evidence-v0.json")
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.VerifyAzure(ctx, ev, nonce, o); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCachedPCKChainStillChecksSignatures: with the PCK chain cached, a
// changed quote byte still fails.
func TestCachedPCKChainStillChecksSignatures(t *testing.T) {
	raw := sgxVector(t)
	o := Options{Now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), AllowDebug: true}
	v := NewVerifier()
	if _, err := v.VerifySGX(context.Background(), raw, o); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{48 + 64, 436 + 3, 436 + 128 + 3} {
		b := append([]byte(nil), raw...)
		b[off] ^= 1
		if _, err := v.VerifySGX(context.Background(), b, o); err == nil {
			t.Errorf("byte %d changed, the cached verifier accepted it", off)
		}
	}
	late := o
	late.Now = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := v.VerifySGX(context.Background(), raw, late); err == nil || !strings.Contains(err.Error(), "not valid at") {
		t.Errorf("a cached chain after its validity: %v", err)
	}
}

// BenchmarkAzureTDXSignatureFloor is what Azure TDX evidence needs
// checked: the TD quote's two P-256 signatures (as for SGX) and the TPM
// quote's RSA-2048 signature.
func BenchmarkAzureTDXSignatureFloor(b *testing.B) {
	ev, _ := azureVector(b, "azure-tdx-vtpm/evidence-v0.json")
	q, err := parseTDX5(ev.TDQuote)
	if err != nil {
		b.Fatal(err)
	}
	pck, err := parsePCKChain(q.pckPEM)
	if err != nil {
		b.Fatal(err)
	}
	pckKey := pck[0].PublicKey.(*ecdsa.PublicKey)
	att, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.attKey...))
	if err != nil {
		b.Fatal(err)
	}
	hcl, err := ParseHCLReport(ev.HCLReport)
	if err != nil {
		b.Fatal(err)
	}
	ak, err := hcl.akPub()
	if err != nil {
		b.Fatal(err)
	}
	mh := sha256.Sum256(ev.TPMQuote.Message)
	if !verifyP256(pckKey, q.qeRep, q.qeSig) || !verifyP256(att, q.signed, q.sig) || rsa.VerifyPKCS1v15(ak, crypto.SHA256, mh[:], ev.TPMQuote.Signature) != nil {
		b.Fatal("signatures do not verify")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		verifyP256(pckKey, q.qeRep, q.qeSig)
		verifyP256(att, q.signed, q.sig)
		_ = rsa.VerifyPKCS1v15(ak, crypto.SHA256, mh[:], ev.TPMQuote.Signature)
	}
}
