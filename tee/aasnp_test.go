package tee

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cocoon.dev/cocoon/internal/vectors"
)

// TestAASNPRoundTrip: real SEV-SNP reports (attest/testdata/evidence, Milan;
// its README says where they were published) written as the attestation agent's evidence
// and read back are the same bytes, so their signatures still verify; the
// JSON has the sev crate's field names and byte arrays.
func TestAASNPRoundTrip(t *testing.T) {
	for _, f := range []string{"milan-report.bin", "milan-b-report.bin"} {
		r, err := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "snp", f))
		if err != nil {
			t.Fatal(err)
		}
		vcek := []byte{0x30, 0x82, 1, 2}
		j, err := SNPToAA(r, map[string][]byte{"vcek": vcek})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var m map[string]map[string]any
		json.Unmarshal(j, &m)
		rep := m["attestation_report"]
		for _, k := range []string{"version", "policy", "current_tcb", "report_data", "chip_id", "signature", "plat_info", "key_info"} {
			if _, ok := rep[k]; !ok {
				t.Errorf("%s: no %s in %s", f, k, j[:200])
			}
		}
		if !strings.Contains(string(j), `"cert_chain":[{"cert_type":"VCEK","data":[48,130,1,2]}]`) {
			t.Errorf("%s: cert_chain %s", f, j[len(j)-80:])
		}
		back, certs, err := SNPFromAA(j)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !bytes.Equal(back, r) {
			for i := range r {
				if back[i] != r[i] {
					t.Fatalf("%s: byte 0x%x differs after the round trip (%02x, was %02x)", f, i, back[i], r[i])
				}
			}
		}
		if !bytes.Equal(certs["vcek"], vcek) {
			t.Errorf("%s: certs %v", f, certs)
		}
	}
}

func TestAASNPRefusals(t *testing.T) {
	r, _ := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "snp", "milan-report.bin"))
	j, _ := SNPToAA(r, nil)
	for name, mod := range map[string]func(string) string{
		"short report_data": func(s string) string { return strings.Replace(s, `"report_data":[`, `"report_data":[1,`, 1) },
		"byte past 255":     func(s string) string { return strings.Replace(s, `"host_data":[`, `"host_data":[256,`, 1) },
		"unknown field":     func(s string) string { return strings.Replace(s, `"version":`, `"extra":1,"version":`, 1) },
		"version 1":         func(s string) string { return strings.Replace(s, `"version":2`, `"version":1`, 1) },
	} {
		if _, _, err := SNPFromAA([]byte(mod(string(j)))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := SNPToAA(r[:100], nil); err == nil {
		t.Error("a short report was written")
	}
}

func FuzzSNPFromAA(f *testing.F) {
	r, _ := os.ReadFile(filepath.Join(vectors.EvidenceDir(), "snp", "milan-report.bin"))
	j, _ := SNPToAA(r, map[string][]byte{"vcek": {1}})
	f.Add(j)
	f.Add([]byte(`{"attestation_report":{},"cert_chain":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, _, err := SNPFromAA(b)
		if err == nil && len(rep) != SNPReportSize {
			t.Fatalf("a %d-byte report", len(rep))
		}
	})
}
