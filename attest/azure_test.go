package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"cocoon.dev/cocoon/internal/vectors"
)

func azureVector(t testing.TB, name string) (*AzureEvidence, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	var ev AzureEvidence
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	// The nonce the verifier of that capture asked for is the quote's
	// qualifying data; the test takes it from there and then checks that
	// any other nonce is refused.
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.TPMQuote.Message)
	if err != nil {
		t.Fatal(err)
	}
	return &ev, att.ExtraData.Buffer
}

// TestAzureSNPvTPM: real evidence of an Azure confidential VM on SEV-SNP
// (attest/testdata/evidence/azure-snp-vtpm, see its README) verifies: the
// SNP report and VCEK, the HCL runtime data bound in REPORT_DATA, the TPM
// quote signed by the attestation key it carries, the nonce and the PCR
// digest. Each tampering is refused with what was wrong.
func TestAzureSNPvTPM(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"azure-snp-vtpm/evidence-v1.json", "azure-snp-vtpm/evidence-v2.json", "azure-tdx-vtpm/evidence-v0.json"} {
		ev, nonce := azureVector(t, name)
		o := Options{Offline: true, Now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)} // inside every certificate's validity
		c, err := NewVerifier().VerifyAzure(ctx, ev, nonce, o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Azure == nil || len(c.Azure.PCRs) == 0 || !strings.Contains(string(c.Azure.RuntimeData), "HCLAkPub") || (c.SNP == nil && c.TDX == nil) {
			t.Errorf("%s: claims %+v", name, c)
		}
		cases := map[string]func(ev *AzureEvidence) []byte{
			"another nonce": func(*AzureEvidence) []byte { return append([]byte{1}, nonce...) },
			"a PCR changed": func(ev *AzureEvidence) []byte {
				ev.TPMQuote.PCRs[0] = append(hexOrBytes(nil), ev.TPMQuote.PCRs[0]...)
				ev.TPMQuote.PCRs[0][0] ^= 1
				return nonce
			},
			"quote signature": func(ev *AzureEvidence) []byte {
				ev.TPMQuote.Signature = make(hexOrBytes, len(ev.TPMQuote.Signature))
				return nonce
			},
			"quote message": func(ev *AzureEvidence) []byte {
				b := append(hexOrBytes(nil), ev.TPMQuote.Message...)
				b[len(b)-1] ^= 1
				ev.TPMQuote.Message = b
				return nonce
			},
			"runtime data": func(ev *AzureEvidence) []byte {
				b := append(b64OrBytes(nil), ev.HCLReport...)
				i := strings.Index(string(b), "HCLAkPub")
				b[i+7] = 'X'
				ev.HCLReport = b
				return nonce
			},
			"another TD's quote": func(ev *AzureEvidence) []byte {
				// Another machine's real quote (with its own PCK chain)
				// in place of this TD's.
				other, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "tdx", "quote-4.dat"))
				if err != nil {
					t.Fatal(err)
				}
				if len(ev.TDQuote) == 0 {
					return nil // SEV-SNP captures: see the VCEK case
				}
				ev.TDQuote = other
				return nonce
			},
			"another chip's VCEK": func(ev *AzureEvidence) []byte {
				if len(ev.TDQuote) > 0 {
					return nil // TDX captures: see the TD quote case
				}
				vcek, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "snp", "milan-vcek.der"))
				if err != nil {
					t.Fatal(err)
				}
				ev.VCEK = vcek
				return nonce
			},
			"hardware report": func(ev *AzureEvidence) []byte {
				if len(ev.TDQuote) > 0 {
					b := append(b64OrBytes(nil), ev.TDQuote...)
					b[48+136] ^= 1 // an MRTD bit
					ev.TDQuote = b
					return nonce
				}
				b := append(b64OrBytes(nil), ev.HCLReport...)
				b[0x20+0x90] ^= 1 // a measurement bit
				ev.HCLReport = b
				return nonce
			},
		}
		why := map[string]string{
			"another nonce": "qualifying data", "a PCR changed": "PCR digest", "quote signature": "not signed by the attestation key",
			"quote message": "not signed by the attestation key", "runtime data": "REPORT_DATA does not bind", "hardware report": "signature",
			"another chip's VCEK": "signature", "another TD's quote": "TD",
		}
		for what, mod := range cases {
			e2 := *ev
			e2.TPMQuote.PCRs = append([]hexOrBytes(nil), ev.TPMQuote.PCRs...)
			n := mod(&e2)
			if n == nil {
				continue
			}
			_, err := NewVerifier().VerifyAzure(ctx, &e2, n, o)
			if err == nil || !strings.Contains(err.Error(), why[what]) {
				t.Errorf("%s: %s: %v, want an error saying %q", name, what, err, why[what])
			}
		}
	}
}

func FuzzParseHCLReport(f *testing.F) {
	ev, _ := azureVectorBytes()
	if ev != nil {
		f.Add(ev)
	}
	f.Add([]byte("HCLA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHCLReport(b)
		if err != nil {
			return
		}
		if len(h.HW) != 1184 || len(h.VarData) > len(b) {
			t.Fatalf("hw %d var %d of %d", len(h.HW), len(h.VarData), len(b))
		}
		_, _ = h.akPub()
	})
}

func azureVectorBytes() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "azure-snp-vtpm", "evidence-v1.json"))
	if err != nil {
		return nil, err
	}
	var ev AzureEvidence
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, err
	}
	return ev.HCLReport, nil
}

// FuzzAzureEvidence: any bytes as Azure vTPM evidence are parsed and
// their vTPM quote checked without a panic (the hardware report's
// verification is fuzzed with its own parsers); a quote is accepted only
// with the nonce it carries.
func FuzzAzureEvidence(f *testing.F) {
	for _, name := range []string{"azure-snp-vtpm/evidence-v1.json", "azure-snp-vtpm/evidence-v2.json", "azure-tdx-vtpm/evidence-v0.json"} {
		b, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte{1, 2, 3})
	}
	f.Add([]byte(`{"hcl_report":"SENMQQ","tpm_quote":{"message":"00","signature":"00","pcrs":[]}}`), []byte{0})
	f.Fuzz(func(t *testing.T, b, nonce []byte) {
		ev, err := ParseAzureEvidence(b)
		if err != nil {
			return
		}
		_, _ = quoteNonce(ev)
		hcl, err := ParseHCLReport(ev.HCLReport)
		if err != nil {
			return
		}
		_ = checkUserData(hcl.VarData, nonce)
		if _, err := verifyVTPMQuote(nil, hcl, ev, nonce); err == nil {
			if got, _ := quoteNonce(ev); !bytes.Equal(got, nonce) {
				t.Fatalf("accepted with nonce %x, the quote carries %x", nonce, got)
			}
		}
	})
}
