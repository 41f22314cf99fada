package attest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-tpm/tpm2"

	"cocoon.dev/cocoon/tee"
)

// Azure confidential VMs do not give the guest the raw report: the
// paravisor (HCL) gets an SNP report whose REPORT_DATA binds its runtime
// data — which carries the vTPM's attestation key (HCLAkPub) — and the
// guest proves its state with a TPM2 quote over the PCRs signed by that
// key. AzureEvidence is that evidence as Azure's guest attestation
// libraries and guest-components' az-snp-vtpm attester send it.

// AzureEvidence is Azure vTPM evidence: on SEV-SNP {"version",
// "hcl_report" (base64url), "tpm_quote": {"message", "signature", "pcrs"}
// (hex), "vcek" (base64url of PEM)}; on TDX {"hcl_report", "td_quote",
// "tpm_quote"} with byte arrays (as the az-tdx-vtpm attester writes them).
type AzureEvidence struct {
	Version   int        `json:"version"`
	HCLReport b64OrBytes `json:"hcl_report"`
	TDQuote   b64OrBytes `json:"td_quote,omitempty"`
	TPMQuote  struct {
		Message   hexOrBytes   `json:"message"`   // TPMS_ATTEST
		Signature hexOrBytes   `json:"signature"` // RSASSA-PKCS1-v1_5, SHA-256
		PCRs      []hexOrBytes `json:"pcrs"`      // SHA-256 bank, PCR 0..23
	} `json:"tpm_quote"`
	VCEK b64OrBytes `json:"vcek,omitempty"` // PEM or DER
}

// hexOrBytes is bytes written as a hex string or a JSON array of numbers.
type hexOrBytes []byte

func (h *hexOrBytes) UnmarshalJSON(d []byte) error {
	var s string
	if json.Unmarshal(d, &s) == nil {
		b, err := hex.DecodeString(s)
		if err != nil {
			return fmt.Errorf("not hex: %w", err)
		}
		*h = b
		return nil
	}
	var b []byte
	if err := json.Unmarshal(d, &b); err != nil {
		return err
	}
	*h = b
	return nil
}

// b64OrBytes is bytes written as base64 (URL or standard alphabet) or a
// JSON array of numbers.
type b64OrBytes []byte

func (h *b64OrBytes) UnmarshalJSON(d []byte) error {
	var s string
	if json.Unmarshal(d, &s) == nil {
		b, err := decodeB64Any(s)
		if err != nil {
			return fmt.Errorf("not base64: %w", err)
		}
		*h = b
		return nil
	}
	var b []byte
	if err := json.Unmarshal(d, &b); err != nil {
		return err
	}
	*h = b
	return nil
}

// AzureClaims are what the vTPM adds to the TEE's claims.
type AzureClaims struct {
	// PCRs are the SHA-256 bank's values the quote covers, by index.
	PCRs map[int]string `json:"pcrs"`
	// RuntimeData is the HCL's runtime data (JSON: keys, vm configuration,
	// user-data).
	RuntimeData json.RawMessage `json:"runtime_data"`
	// Nonce is the TPM quote's qualifying data.
	Nonce string `json:"nonce"`
}

const (
	hclHeaderSize   = 0x20
	hclRequestType  = 2 // an attestation report request
	hclReportSNP    = 2
	hclReportTDX    = 4
	hclHashSHA256   = 1
	hclHWRegionSize = tee.SNPReportSize // the hardware report region, SNP or TDX
)

// HCLReport is a parsed paravisor report.
type HCLReport struct {
	// HW is the hardware report region: an SNP report, or a TDREPORT
	// (1024 bytes) and padding.
	HW []byte
	// ReportType is 2 (SEV-SNP) or 4 (TDX).
	ReportType uint32
	// VarData is the runtime data whose hash the hardware report binds.
	VarData  []byte
	hashType uint32
}

// ParseHCLReport splits an HCL report: a 32-byte header ("HCLA"), the
// hardware report, the runtime data header and the runtime data.
func ParseHCLReport(b []byte) (*HCLReport, error) {
	if len(b) < hclHeaderSize+tee.SNPReportSize+20 {
		return nil, fmt.Errorf("HCL report: %d bytes is too short", len(b))
	}
	if !bytes.Equal(b[:4], []byte("HCLA")) {
		return nil, errors.New(`HCL report: no "HCLA" signature`)
	}
	le := binary.LittleEndian
	if t := le.Uint32(b[12:]); t != hclRequestType {
		return nil, fmt.Errorf("HCL report: request type %d; an attestation report (2) is read", t)
	}
	hw := b[hclHeaderSize : hclHeaderSize+hclHWRegionSize]
	rt := b[hclHeaderSize+hclHWRegionSize:]
	reportType, hashType, size := le.Uint32(rt[8:]), le.Uint32(rt[12:]), le.Uint32(rt[16:])
	if reportType != hclReportSNP && reportType != hclReportTDX {
		return nil, fmt.Errorf("HCL report: report type %d; SEV-SNP (2) or TDX (4) is read", reportType)
	}
	if uint64(size) > uint64(len(rt)-20) {
		return nil, fmt.Errorf("HCL report: runtime data of %d bytes does not fit in %d", size, len(rt)-20)
	}
	return &HCLReport{HW: hw, ReportType: reportType, VarData: rt[20 : 20+size], hashType: hashType}, nil
}

// akPub finds the vTPM attestation key in the HCL runtime data.
func (h *HCLReport) akPub() (*rsa.PublicKey, error) {
	var rt struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(h.VarData, &rt); err != nil {
		return nil, fmt.Errorf("HCL runtime data: %w", err)
	}
	for _, k := range rt.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(k); err != nil || jwk.KeyID != "HCLAkPub" {
			continue
		}
		if pub, ok := jwk.Key.(*rsa.PublicKey); ok {
			return pub, nil
		}
	}
	return nil, errors.New("HCL runtime data: no RSA key HCLAkPub")
}

func decodeB64Any(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// VerifyAzure verifies Azure vTPM evidence, on SEV-SNP or TDX: the
// hardware evidence as for raw evidence (the SNP report and its VCEK chain
// at VMPL 0, the paravisor's; or the TD quote), SHA-256 of the HCL runtime
// data against its REPORT_DATA, the TPM quote's signature by the
// attestation key the runtime data carries, its qualifying data against
// nonce, and its PCR digest against the PCR values given.
func (v *Verifier) VerifyAzure(ctx context.Context, ev *AzureEvidence, nonce []byte, o Options) (*Claims, error) {
	fail := func(format string, args ...any) (*Claims, error) {
		return nil, fmt.Errorf("%w: Azure vTPM: "+format, append([]any{ErrVerification}, args...)...)
	}
	hcl, err := ParseHCLReport(ev.HCLReport)
	if err != nil {
		return fail("%v", err)
	}
	if hcl.hashType != hclHashSHA256 {
		return fail("HCL runtime data hash type %d; SHA-256 (1) is read", hcl.hashType)
	}
	// The hardware report binds the paravisor's runtime data, not the
	// caller's: the binding is checked in the TPM quote. Reference values
	// are checked once the vTPM's claims are in.
	ref := o.Reference
	o.Binding, o.BoundData, o.ReportData, o.Reference = "", nil, nil, nil
	var c *Claims
	switch hcl.ReportType {
	case hclReportSNP:
		certs := map[string][]byte{}
		if vb := []byte(ev.VCEK); len(vb) > 0 {
			if blk, _ := pem.Decode(vb); blk != nil {
				vb = blk.Bytes
			}
			certs["vcek"] = vb
		}
		kind := tee.SNP
		if o.TrustSim && simIssued(ev.VCEK, o.SimRoots) {
			// The simulated TEE standing in for the paravisor's
			// hardware: its claims say sim, and every sim gate applies.
			kind = tee.Sim
		}
		if c, err = v.Verify(ctx, &tee.Evidence{TEE: kind, Report: hcl.HW, Certs: certs}, o); err != nil {
			return c, err
		}
		if c.SNP != nil && c.SNP.VMPL != 0 {
			return fail("the SNP report is at VMPL %d; the paravisor's is at 0", c.SNP.VMPL)
		}
	case hclReportTDX:
		if len(ev.TDQuote) == 0 {
			return fail("TDX evidence needs td_quote")
		}
		if c, err = v.Verify(ctx, &tee.Evidence{TEE: tee.TDX, Report: ev.TDQuote}, o); err != nil {
			return c, err
		}
		// The HCL report's TDREPORT and the quote must be the same TD
		// report: REPORTDATA sits at 128 in the TDREPORT's MAC structure.
		if rd, _ := hex.DecodeString(c.ReportData); !bytes.Equal(hcl.HW[128:192], rd) {
			return fail("the TD quote is not of the TDREPORT the HCL report carries (REPORTDATA differs)")
		}
	}
	h := sha256.Sum256(hcl.VarData)
	rd, _ := hex.DecodeString(c.ReportData)
	if len(rd) < 32 || !bytes.Equal(rd[:32], h[:]) {
		return fail("REPORT_DATA does not bind the HCL runtime data (SHA-256 %x)", h)
	}
	az, err := verifyVTPMQuote(&v.chains, hcl, ev, nonce)
	if err != nil {
		return fail("%w", err)
	}
	if ev.Version >= 2 {
		// Version 2 evidence also binds the nonce into the hardware
		// report: the paravisor put it in its runtime data's user-data
		// when the guest asked for a fresh report.
		if err := checkUserData(hcl.VarData, nonce); err != nil {
			return fail("%v", err)
		}
	}
	c.Platform = "Azure vTPM on " + c.Platform
	c.Azure = az
	switch {
	case c.TEE == tee.Sim:
	case c.TDX != nil:
		c.TEE = tee.AzureTDX
	default:
		c.TEE = tee.AzureSNP
	}
	if ref != nil {
		if err := ref.Check(c); err != nil {
			return c, fmt.Errorf("%w: %w", ErrVerification, err)
		}
	}
	return c, nil
}

// errQualifyingData marks a TPM quote whose qualifying data is not the
// nonce expected.
var errQualifyingData = errors.New("the TPM quote's qualifying data is not the nonce expected")

// quoteNonce reads the qualifying data of the evidence's TPM quote
// (unverified: for diagnosis only).
func quoteNonce(ev *AzureEvidence) ([]byte, error) {
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.TPMQuote.Message)
	if err != nil {
		return nil, err
	}
	return att.ExtraData.Buffer, nil
}

// checkUserData checks that the HCL runtime data's "user-data" (hex)
// starts with nonce.
func checkUserData(varData, nonce []byte) error {
	var rt struct {
		UserData string `json:"user-data"`
	}
	if err := json.Unmarshal(varData, &rt); err != nil {
		return fmt.Errorf("the HCL runtime data: %w", err)
	}
	ud, err := hex.DecodeString(rt.UserData)
	if err != nil || len(ud) < len(nonce) || !bytes.Equal(ud[:len(nonce)], nonce) {
		return fmt.Errorf("version 2 evidence: the HCL runtime data's user-data %q does not carry the nonce %x", rt.UserData, nonce)
	}
	return nil
}

// verifyVTPMQuote checks the vTPM's quote against the key the HCL runtime
// data carries, the nonce and the PCR values.
func verifyVTPMQuote(cache *chainCache, hcl *HCLReport, ev *AzureEvidence, nonce []byte) (*AzureClaims, error) {
	ak, err := cache.akPub(hcl)
	if err != nil {
		return nil, err
	}
	msg, sig := []byte(ev.TPMQuote.Message), []byte(ev.TPMQuote.Signature)
	mh := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(ak, crypto.SHA256, mh[:], sig); err != nil {
		return nil, fmt.Errorf("the TPM quote is not signed by the attestation key the HCL report binds: %w", err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](msg)
	if err != nil {
		return nil, fmt.Errorf("the TPM quote: %w", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestQuote {
		return nil, fmt.Errorf("the TPM quote is not a TPM-generated quote (magic %#x, type %#x)", att.Magic, att.Type)
	}
	if nonce == nil {
		return nil, errors.New("no nonce to check the quote's qualifying data against")
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		return nil, fmt.Errorf("%w: found %x, expected %x", errQualifyingData, att.ExtraData.Buffer, nonce)
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("the TPM quote: %w", err)
	}
	pcrs := map[int]string{}
	dig := sha256.New()
	for _, sel := range qi.PCRSelect.PCRSelections {
		if sel.Hash != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("the quote selects PCRs of hash %#x; the SHA-256 bank is read", sel.Hash)
		}
		for i := 0; i < len(sel.PCRSelect)*8; i++ {
			if sel.PCRSelect[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			if i >= len(ev.TPMQuote.PCRs) {
				return nil, fmt.Errorf("the quote covers PCR %d, which the evidence does not give", i)
			}
			val := ev.TPMQuote.PCRs[i]
			if len(val) != sha256.Size {
				return nil, fmt.Errorf("PCR %d is not a SHA-256 value", i)
			}
			dig.Write(val)
			pcrs[i] = hex.EncodeToString(val)
		}
	}
	if !bytes.Equal(dig.Sum(nil), qi.PCRDigest.Buffer) {
		return nil, errors.New("the PCR values given do not make the quote's PCR digest")
	}
	return &AzureClaims{PCRs: pcrs, RuntimeData: append(json.RawMessage(nil), hcl.VarData...), Nonce: hex.EncodeToString(nonce)}, nil
}
