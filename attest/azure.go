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

// AzureEvidence is Azure vTPM evidence ({"version", "hcl_report",
// "tpm_quote": {"message", "signature", "pcrs"}, "vcek"}).
type AzureEvidence struct {
	Version   int    `json:"version"`
	HCLReport string `json:"hcl_report"` // base64url
	TPMQuote  struct {
		Message   string   `json:"message"`   // hex TPMS_ATTEST
		Signature string   `json:"signature"` // hex RSASSA-PKCS1-v1_5 SHA-256
		PCRs      []string `json:"pcrs"`      // hex SHA-256 bank, PCR 0..23
	} `json:"tpm_quote"`
	VCEK string `json:"vcek"` // base64url of PEM (or DER)
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
	hclHeaderSize = 0x20
	hclTypeSNP    = 2
	hclHashSHA256 = 1
)

// HCLReport is a parsed paravisor report.
type HCLReport struct {
	// HW is the hardware report (SNP) it carries.
	HW []byte
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
	if t := le.Uint32(b[12:]); t != hclTypeSNP {
		return nil, fmt.Errorf("HCL report: request type %d; only SEV-SNP (2) is read here", t)
	}
	hw := b[hclHeaderSize : hclHeaderSize+tee.SNPReportSize]
	rt := b[hclHeaderSize+tee.SNPReportSize:]
	hashType, size := le.Uint32(rt[12:]), le.Uint32(rt[16:])
	if uint64(size) > uint64(len(rt)-20) {
		return nil, fmt.Errorf("HCL report: runtime data of %d bytes does not fit in %d", size, len(rt)-20)
	}
	return &HCLReport{HW: hw, VarData: rt[20 : 20+size], hashType: hashType}, nil
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

// VerifyAzureSNP verifies Azure vTPM evidence on SEV-SNP: the SNP report
// and its VCEK chain as for raw SNP evidence, the HCL runtime data against
// REPORT_DATA, VMPL 0 (the paravisor's), the TPM quote's signature by the
// attestation key the runtime data carries, its qualifying data against
// nonce, and its PCR digest against the PCR values given.
func (v *Verifier) VerifyAzureSNP(ctx context.Context, ev *AzureEvidence, nonce []byte, o Options) (*Claims, error) {
	fail := func(format string, args ...any) (*Claims, error) {
		return nil, fmt.Errorf("%w: Azure vTPM: "+format, append([]any{ErrVerification}, args...)...)
	}
	raw, err := decodeB64Any(ev.HCLReport)
	if err != nil {
		return fail("hcl_report is not base64: %v", err)
	}
	hcl, err := ParseHCLReport(raw)
	if err != nil {
		return fail("%v", err)
	}
	certs := map[string][]byte{}
	if ev.VCEK != "" {
		vb, err := decodeB64Any(ev.VCEK)
		if err != nil {
			return fail("vcek is not base64: %v", err)
		}
		if blk, _ := pem.Decode(vb); blk != nil {
			vb = blk.Bytes
		}
		certs["vcek"] = vb
	}
	o.Binding, o.BoundData, o.ReportData = "", nil, nil
	c, err := v.Verify(ctx, &tee.Evidence{TEE: tee.SNP, Report: hcl.HW, Certs: certs}, o)
	if err != nil {
		return c, err
	}
	if c.SNP != nil && c.SNP.VMPL != 0 {
		return fail("the SNP report is at VMPL %d; the paravisor's is at 0", c.SNP.VMPL)
	}
	if hcl.hashType != hclHashSHA256 {
		return fail("HCL runtime data hash type %d; SHA-256 (1) is read", hcl.hashType)
	}
	h := sha256.Sum256(hcl.VarData)
	rd, _ := hex.DecodeString(c.ReportData)
	if len(rd) < 32 || !bytes.Equal(rd[:32], h[:]) {
		return fail("REPORT_DATA does not bind the HCL runtime data (SHA-256 %x)", h)
	}
	ak, err := hcl.akPub()
	if err != nil {
		return fail("%v", err)
	}
	msg, err := hex.DecodeString(ev.TPMQuote.Message)
	if err != nil {
		return fail("tpm_quote.message is not hex: %v", err)
	}
	sig, err := hex.DecodeString(ev.TPMQuote.Signature)
	if err != nil {
		return fail("tpm_quote.signature is not hex: %v", err)
	}
	mh := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(ak, crypto.SHA256, mh[:], sig); err != nil {
		return fail("the TPM quote is not signed by the attestation key the HCL report binds: %v", err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](msg)
	if err != nil {
		return fail("the TPM quote: %v", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestQuote {
		return fail("the TPM quote is not a TPM-generated quote (magic %#x, type %#x)", att.Magic, att.Type)
	}
	if nonce == nil {
		return fail("no nonce to check the quote's qualifying data against")
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		return fail("the quote's qualifying data %x is not the nonce %x", att.ExtraData.Buffer, nonce)
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return fail("the TPM quote: %v", err)
	}
	pcrs := map[int]string{}
	dig := sha256.New()
	for _, sel := range qi.PCRSelect.PCRSelections {
		if sel.Hash != tpm2.TPMAlgSHA256 {
			return fail("the quote selects PCRs of hash %#x; the SHA-256 bank is read", sel.Hash)
		}
		for i := 0; i < len(sel.PCRSelect)*8; i++ {
			if sel.PCRSelect[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			if i >= len(ev.TPMQuote.PCRs) {
				return fail("the quote covers PCR %d, which the evidence does not give", i)
			}
			val, err := hex.DecodeString(ev.TPMQuote.PCRs[i])
			if err != nil || len(val) != sha256.Size {
				return fail("PCR %d is not a SHA-256 value", i)
			}
			dig.Write(val)
			pcrs[i] = ev.TPMQuote.PCRs[i]
		}
	}
	if !bytes.Equal(dig.Sum(nil), qi.PCRDigest.Buffer) {
		return fail("the PCR values given do not make the quote's PCR digest")
	}
	c.Azure = &AzureClaims{PCRs: pcrs, RuntimeData: append(json.RawMessage(nil), hcl.VarData...), Nonce: hex.EncodeToString(nonce)}
	return c, nil
}
