package attest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"cocoon.dev/cocoon/tee"
)

// ParseAzureEvidence decodes Azure vTPM evidence JSON (bounded by
// tee.MaxEvidenceBytes) and checks that its parts are there.
func ParseAzureEvidence(b []byte) (*AzureEvidence, error) {
	if len(b) > tee.MaxEvidenceBytes {
		return nil, fmt.Errorf("azure vTPM evidence: %d bytes; at most %d are accepted", len(b), tee.MaxEvidenceBytes)
	}
	var ev AzureEvidence
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("not Azure vTPM evidence: %w", err)
	}
	if len(ev.HCLReport) == 0 || len(ev.TPMQuote.Message) == 0 || len(ev.TPMQuote.Signature) == 0 {
		return nil, errors.New(`azure vTPM evidence needs "hcl_report" and "tpm_quote" {"message", "signature", "pcrs"}`)
	}
	if len(ev.TPMQuote.PCRs) > 24 {
		return nil, fmt.Errorf("azure vTPM evidence: %d PCR values; a TPM has 24", len(ev.TPMQuote.PCRs))
	}
	return &ev, nil
}

// verifyAzureKind verifies an envelope of kind az-snp-vtpm or az-tdx-vtpm.
// The binding lives in the TPM quote's qualifying data: it must be the
// caller's binding's digest of the bound data (o.BoundData, else the
// envelope's runtime data), or o.ReportData exactly when no data is bound.
func (v *Verifier) verifyAzureKind(ctx context.Context, ev *tee.Evidence, o *Options) (*Claims, error) {
	az, err := ParseAzureEvidence(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	var nonce []byte
	data := o.BoundData
	if data == nil {
		data = ev.RuntimeData
	}
	switch {
	case data != nil:
		if o.Binding == "" {
			return nil, fmt.Errorf("%w: the evidence carries runtime data but the verifier names no binding to check it under", ErrVerification)
		}
		if ev.Binding != "" && ev.Binding != o.Binding {
			return nil, fmt.Errorf("%w: the evidence says it was made for %s; only %s is accepted here", ErrVerification, ev.Binding, o.Binding)
		}
		nonce = o.Binding.Digest(data)
	case len(o.ReportData) > 0:
		nonce = o.ReportData
	default:
		return nil, fmt.Errorf("%w: Azure vTPM evidence is verified against a nonce (the TPM quote's qualifying data); none was given", ErrVerification)
	}
	c, err := v.VerifyAzure(ctx, az, nonce, *o)
	if err != nil {
		if errors.Is(err, errQualifyingData) && data != nil {
			if b, ok := identifyDigest(az, data); ok {
				return c, fmt.Errorf("%w: the TPM quote binds this runtime data for %s, not for %s: evidence made for another consumer is refused", ErrVerification, b, o.Binding)
			}
		}
		return c, err
	}
	if (ev.TEE == tee.AzureTDX) != (c.TDX != nil) {
		hw := "SEV-SNP"
		if c.TDX != nil {
			hw = "TDX"
		}
		return c, fmt.Errorf("%w: the envelope says %s but the HCL report carries %s evidence", ErrVerification, ev.TEE, hw)
	}
	c.ReportData = hex.EncodeToString(nonce)
	return c, nil
}

// identifyDigest names the binding whose digest of data the quote carries.
func identifyDigest(az *AzureEvidence, data []byte) (tee.Binding, bool) {
	got, err := quoteNonce(az)
	if err != nil {
		return "", false
	}
	for _, b := range tee.Bindings() {
		if bytes.Equal(b.Digest(data), got) {
			return b, true
		}
	}
	return "", false
}

// simIssued reports whether cert (DER or PEM) was signed by one of the
// simulated TEE's roots (PEM): its evidence is then verified as the sim's,
// under TrustSim only.
func simIssued(cert, simRoots []byte) bool {
	if blk, _ := pem.Decode(cert); blk != nil {
		cert = blk.Bytes
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		return false
	}
	for rest := simRoots; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return false
		}
		r, err := x509.ParseCertificate(blk.Bytes)
		if err == nil && c.CheckSignatureFrom(r) == nil {
			return true
		}
	}
}
