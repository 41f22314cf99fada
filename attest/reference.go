package attest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// ReferenceValues are what a relying party accepts. Empty lists accept
// anything. The file form (YAML or JSON):
//
//	measurements: [<hex>, ...]      # SNP MEASUREMENT / TDX MRTD
//	host_data: [<hex>, ...]         # policy hashes: SNP HOST_DATA / TDX MRCONFIGID
//	min_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}   # SNP
//	allow_debug: false
//	tees: [snp, tdx]                # accepted TEEs (sim must be listed to be accepted)
type ReferenceValues struct {
	Measurements []string `json:"measurements,omitempty"`
	HostData     []string `json:"host_data,omitempty"`
	MinTCB       *TCB     `json:"min_tcb,omitempty"`
	AllowDebug   bool     `json:"allow_debug,omitempty"`
	TEEs         []string `json:"tees,omitempty"`
}

// LoadReferenceValues reads a reference values file, refusing unknown keys
// and malformed hex.
func LoadReferenceValues(path string) (*ReferenceValues, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reference values: %w", err)
	}
	rv, err := ParseReferenceValues(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rv, nil
}

// ParseReferenceValues reads reference values (YAML or JSON) strictly.
func ParseReferenceValues(b []byte) (*ReferenceValues, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("reference values: %w", err)
	}
	var rv ReferenceValues
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rv); err != nil {
		return nil, fmt.Errorf("reference values: %w (in YAML, quote hex values: '00ab...')", err)
	}
	for _, list := range [][]string{rv.Measurements, rv.HostData} {
		for i, h := range list {
			list[i] = strings.ToLower(strings.TrimPrefix(h, "0x"))
			if _, err := hex.DecodeString(list[i]); err != nil {
				return nil, fmt.Errorf("reference values: %q is not hex", h)
			}
		}
	}
	return &rv, nil
}

func oneOf(field, found string, allowed []string) error {
	if len(allowed) == 0 || slices.Contains(allowed, found) {
		return nil
	}
	if len(allowed) == 1 {
		return fmt.Errorf("%s: found %s, expected %s", field, found, allowed[0])
	}
	return fmt.Errorf("%s: found %s, expected one of %s", field, found, strings.Join(allowed, ", "))
}

// Check returns an error naming the first field of c that the reference
// values do not accept, with what was expected and what was found.
func (rv *ReferenceValues) Check(c *Claims) error {
	if len(rv.TEEs) > 0 && !slices.Contains(rv.TEEs, string(c.TEE)) {
		return fmt.Errorf("tee: found %s, expected one of %s", c.TEE, strings.Join(rv.TEEs, ", "))
	}
	if err := oneOf("measurement", c.Measurement, rv.Measurements); err != nil {
		return err
	}
	if err := oneOf("host_data", c.HostData, rv.HostData); err != nil {
		return err
	}
	if c.Debug && !rv.AllowDebug {
		return fmt.Errorf("debug: found true (the guest policy allows debugging), expected false")
	}
	if m := rv.MinTCB; m != nil && c.SNP != nil {
		t := c.SNP.ReportedTCB
		for _, x := range []struct {
			name      string
			got, want uint8
		}{{"bootloader", t.Bootloader, m.Bootloader}, {"tee", t.TEE, m.TEE}, {"snp", t.SNP, m.SNP}, {"microcode", t.Microcode, m.Microcode}} {
			if x.got < x.want {
				return fmt.Errorf("reported_tcb.%s: found %d, expected at least %d (reported %s, minimum %s)", x.name, x.got, x.want, t, *m)
			}
		}
	}
	return nil
}
