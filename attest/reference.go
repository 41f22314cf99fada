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
//	pcrs: {8: [<hex>, ...]}         # Azure vTPM: SHA-256 PCR values, by index
//	sgx: {mrenclave: [<hex>], mrsigner: [<hex>], isv_prod_id: 1, min_isv_svn: 2}
//
// Values for one TEE are a requirement on every piece of evidence: PCRs
// refuse evidence without a vTPM, sgx refuses evidence that is not an
// enclave's.
type ReferenceValues struct {
	Measurements []string `json:"measurements,omitempty"`
	HostData     []string `json:"host_data,omitempty"`
	MinTCB       *TCB     `json:"min_tcb,omitempty"`
	AllowDebug   bool     `json:"allow_debug,omitempty"`
	TEEs         []string `json:"tees,omitempty"`
	// PCRs are the accepted values of vTPM PCRs (SHA-256 bank).
	PCRs map[int][]string `json:"pcrs,omitempty"`
	// SGX are an enclave's identity and minimum security version.
	SGX *SGXReference `json:"sgx,omitempty"`
}

// SGXReference are the reference values of an SGX enclave. MRSIGNER with
// ISVPRODID and a minimum ISVSVN accepts every build its signer releases
// from that version on; MRENCLAVE pins one build.
type SGXReference struct {
	MRENCLAVE []string `json:"mrenclave,omitempty"`
	MRSIGNER  []string `json:"mrsigner,omitempty"`
	ISVProdID *uint16  `json:"isv_prod_id,omitempty"`
	MinISVSVN uint16   `json:"min_isv_svn,omitempty"`
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
	lists := [][]string{rv.Measurements, rv.HostData}
	for i, l := range rv.PCRs {
		if i < 0 || i > 23 {
			return nil, fmt.Errorf("reference values: pcrs: %d is not a PCR index (0-23)", i)
		}
		lists = append(lists, l)
	}
	if rv.SGX != nil {
		lists = append(lists, rv.SGX.MRENCLAVE, rv.SGX.MRSIGNER)
	}
	for _, list := range lists {
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
	if err := rv.checkPCRs(c); err != nil {
		return err
	}
	return rv.checkSGX(c)
}

func (rv *ReferenceValues) checkPCRs(c *Claims) error {
	if len(rv.PCRs) == 0 {
		return nil
	}
	if c.Azure == nil {
		return fmt.Errorf("pcrs: the reference values pin vTPM PCRs, but %s evidence has none", c.TEE)
	}
	idx := make([]int, 0, len(rv.PCRs))
	for i := range rv.PCRs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		got, ok := c.Azure.PCRs[i]
		if !ok {
			return fmt.Errorf("pcrs[%d]: the TPM quote does not cover PCR %d", i, i)
		}
		if err := oneOf(fmt.Sprintf("pcrs[%d]", i), got, rv.PCRs[i]); err != nil {
			return err
		}
	}
	return nil
}

func (rv *ReferenceValues) checkSGX(c *Claims) error {
	r := rv.SGX
	if r == nil {
		return nil
	}
	if c.SGX == nil {
		return fmt.Errorf("sgx: the reference values are an SGX enclave's, but the evidence is %s", c.TEE)
	}
	if err := oneOf("sgx.mrenclave", c.SGX.MRENCLAVE, r.MRENCLAVE); err != nil {
		return err
	}
	if err := oneOf("sgx.mrsigner", c.SGX.MRSIGNER, r.MRSIGNER); err != nil {
		return err
	}
	if r.ISVProdID != nil && c.SGX.ISVProdID != *r.ISVProdID {
		return fmt.Errorf("sgx.isv_prod_id: found %d, expected %d", c.SGX.ISVProdID, *r.ISVProdID)
	}
	if c.SGX.ISVSVN < r.MinISVSVN {
		return fmt.Errorf("sgx.isv_svn: found %d, expected at least %d", c.SGX.ISVSVN, r.MinISVSVN)
	}
	return nil
}
