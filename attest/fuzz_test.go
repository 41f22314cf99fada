package attest

import (
	"context"
	"slices"
	"testing"
	"time"

	"cocoon.dev/cocoon/tee"
)

func FuzzParseSNPReport(f *testing.F) {
	f.Add(readEvidence(f, "snp/milan-report.bin"))
	f.Add(readEvidence(f, "snp/milan-b-report.bin"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseSNPReport(b)
		if err == nil {
			_ = snpClaims(tee.SNP, r, "")
		}
	})
}

func FuzzParseTDXQuote(f *testing.F) {
	f.Add(readEvidence(f, "tdx/spr-quote-v4.dat"))
	f.Add(readEvidence(f, "tdx/quote-4.dat"))
	f.Add([]byte{4, 0, 2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseTDXQuote(b); err != nil {
			return
		}
		if q, err := parseTDX5(b); err == nil {
			_ = tdxBodyClaims(q.version, q.body)
			_, _, _ = pckChain(q.pckPEM)
		}
	})
}

func FuzzParseEvidence(f *testing.F) {
	f.Add([]byte(`{"tee":"sim","report":"AAAA","certs":{"vcek":"AAAA"},"runtime_data":"aGk="}`))
	f.Add([]byte(`{"tee":"snp","report":""}`))
	f.Add([]byte(`{"tee":"tdx","report":"AQID","extra":1}`))
	f.Add([]byte(`{"tee":"sim","report":"AAAA","runtime_data":"aGk=","binding":"cocoon/v1/host-challenge"}`))
	f.Add([]byte(`{"tee":"sim","report":"AAAA","binding":"cocoon/v1/key-broker\u0000"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := tee.ParseEvidence(b)
		if err != nil {
			return
		}
		if ev.TEE != tee.SNP && ev.TEE != tee.TDX && ev.TEE != tee.Sim || len(ev.Report) == 0 {
			t.Fatalf("accepted bad envelope %+v", ev)
		}
		if ev.Binding != "" && !slices.Contains(tee.Bindings(), ev.Binding) {
			t.Fatalf("accepted an unknown binding %q", ev.Binding)
		}
	})
}

// FuzzClaimsFromEvidence feeds mutated real evidence through the whole
// verifier: it must never panic and never accept a changed report.
func FuzzClaimsFromEvidence(f *testing.F) {
	good := readEvidence(f, "snp/milan-b-report.bin")
	vcek := readEvidence(f, "snp/milan-b-vcek.der")
	f.Add(good, uint16(0), byte(0))
	f.Add(good, uint16(0x90), byte(1))
	f.Add(good, uint16(0x2A0), byte(0x80))
	o := Options{Offline: true, Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	v := NewVerifier()
	f.Fuzz(func(t *testing.T, report []byte, at uint16, flip byte) {
		b := append([]byte{}, report...)
		if int(at) < len(b) {
			b[at] ^= flip
		}
		c, err := v.Verify(context.Background(), &tee.Evidence{TEE: tee.SNP, Report: b, Certs: map[string][]byte{"vcek": vcek}}, o)
		if err == nil && (len(b) != len(good) || string(b[:0x2A0+144]) != string(good[:0x2A0+144])) {
			t.Fatalf("a changed report verified: %+v", c)
		}
	})
}
