// Package azvtpm is the attester of an Azure confidential VM (SEV-SNP or
// TDX), where the paravisor (HCL) keeps the hardware report and the guest
// proves its state with the vTPM: the binding goes into the paravisor's
// user-data NV index (which makes it fetch a fresh hardware report binding
// it) and into a TPM2 quote's qualifying data, the quote signed by the
// attestation key the hardware report binds. It speaks to the TPM through
// go-tpm (/dev/tpmrm0 in a VM; any go-tpm transport in tests). Evidence is
// the az-snp-vtpm / az-tdx-vtpm JSON that guest-components writes and
// attest.VerifyAzure reads.
//
// Tested against swtpm with cocoon's simulated paravisor (tee/sim); not
// tested on Azure hardware.
package azvtpm

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"cocoon.dev/cocoon/tee"
)

// The vTPM's fixed handles on Azure confidential VMs.
const (
	// HCLReportIndex is the NV index holding the paravisor's HCL report.
	HCLReportIndex tpm2.TPMHandle = 0x01400001
	// UserDataIndex is the NV index whose writes make the paravisor
	// regenerate the HCL report with that user data in its runtime data.
	UserDataIndex tpm2.TPMHandle = 0x01400002
	// AKHandle is the persistent handle of the vTPM attestation key.
	AKHandle tpm2.TPMHandle = 0x81000003
	// UserDataSize is the size of the user-data index.
	UserDataSize = 64
	// maxNVChunk is what one TPM2_NV_Read returns at most on common TPMs.
	maxNVChunk = 1024
	// maxHCLReport bounds the HCL report read from the TPM.
	maxHCLReport = 64 << 10
)

// Attester gets Azure vTPM evidence.
type Attester struct {
	tpm  transport.TPM
	kind tee.Kind
	// vcek returns the VCEK certificate (DER) on SEV-SNP: Azure serves it
	// from the instance metadata service; nil on TDX.
	vcek func(context.Context) ([]byte, error)
	// tdQuote turns the TDREPORT of the HCL report into a TD quote on TDX
	// (Azure's instance metadata service does it); nil on SEV-SNP.
	tdQuote func(context.Context, []byte) ([]byte, error)
}

// NewSNP returns an attester for an Azure SEV-SNP CVM whose vTPM is tpm;
// vcek fetches the VCEK (DER or PEM).
func NewSNP(tpm transport.TPM, vcek func(context.Context) ([]byte, error)) *Attester {
	return &Attester{tpm: tpm, kind: tee.AzureSNP, vcek: vcek}
}

// NewTDX returns an attester for an Azure TDX CVM; tdQuote turns a
// TDREPORT into a quote.
func NewTDX(tpm transport.TPM, tdQuote func(context.Context, []byte) ([]byte, error)) *Attester {
	return &Attester{tpm: tpm, kind: tee.AzureTDX, tdQuote: tdQuote}
}

// Kind implements tee.Attester.
func (a *Attester) Kind() tee.Kind { return a.kind }

// Evidence implements tee.Attester: reportData goes into the user-data
// index and, whole, into the quote's qualifying data.
func (a *Attester) Evidence(ctx context.Context, reportData [64]byte) (*tee.Evidence, error) {
	ev, err := a.Collect(ctx, reportData[:])
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return &tee.Evidence{TEE: a.kind, Report: b}, nil
}

// RawEvidence collects evidence with nonce as it is (1 to 64 bytes) and
// returns its JSON: what guest-components' attestation agent answers.
func (a *Attester) RawEvidence(ctx context.Context, nonce []byte) ([]byte, error) {
	ev, err := a.Collect(ctx, nonce)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ev)
}

// Evidence is the az-snp-vtpm / az-tdx-vtpm evidence JSON, version 2.
type Evidence struct {
	Version   int      `json:"version"`
	TPMQuote  TPMQuote `json:"tpm_quote"`
	HCLReport string   `json:"hcl_report"`         // base64url
	VCEK      string   `json:"vcek,omitempty"`     // base64url DER (SEV-SNP)
	TDQuote   string   `json:"td_quote,omitempty"` // base64url (TDX)
}

// TPMQuote is a TPM2 quote with the PCR values it covers (hex).
type TPMQuote struct {
	Signature string   `json:"signature"`
	Message   string   `json:"message"`
	PCRs      []string `json:"pcrs"`
}

// Collect gathers the evidence with nonce (at most 64 bytes) as user data
// and qualifying data.
func (a *Attester) Collect(ctx context.Context, nonce []byte) (*Evidence, error) {
	if len(nonce) == 0 || len(nonce) > UserDataSize {
		return nil, fmt.Errorf("azure vTPM: the nonce is %d bytes; 1 to %d are quoted", len(nonce), UserDataSize)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ud := make([]byte, UserDataSize)
	copy(ud, nonce)
	if err := WriteUserData(a.tpm, ud); err != nil {
		return nil, err
	}
	hcl, err := ReadNV(a.tpm, HCLReportIndex, maxHCLReport)
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: the HCL report: %w", err)
	}
	q, err := Quote(a.tpm, nonce)
	if err != nil {
		return nil, err
	}
	ev := &Evidence{Version: 2, TPMQuote: *q, HCLReport: base64.RawURLEncoding.EncodeToString(hcl)}
	switch {
	case a.vcek != nil:
		v, err := a.vcek(ctx)
		if err != nil {
			return nil, fmt.Errorf("azure vTPM: the VCEK: %w", err)
		}
		ev.VCEK = base64.RawURLEncoding.EncodeToString(v)
	case a.tdQuote != nil:
		const tdReportOffset, tdReportSize = 0x20, 1024
		if len(hcl) < tdReportOffset+tdReportSize {
			return nil, errors.New("azure vTPM: the HCL report is too short to hold a TDREPORT")
		}
		tq, err := a.tdQuote(ctx, hcl[tdReportOffset:tdReportOffset+tdReportSize])
		if err != nil {
			return nil, fmt.Errorf("azure vTPM: the TD quote: %w", err)
		}
		ev.TDQuote = base64.RawURLEncoding.EncodeToString(tq)
	}
	return ev, nil
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// WriteUserData writes the user-data index (defining it when absent, as
// Azure's guest tools do).
func WriteUserData(t transport.TPM, ud []byte) error {
	pub, err := tpm2.NVReadPublic{NVIndex: UserDataIndex}.Execute(t)
	if err != nil {
		def := tpm2.NVDefineSpace{AuthHandle: ownerAuth, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: UserDataIndex, NameAlg: tpm2.TPMAlgSHA256, DataSize: UserDataSize,
			Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthWrite: true, AuthRead: true, NoDA: true},
		})}
		if _, err := def.Execute(t); err != nil {
			return fmt.Errorf("azure vTPM: define the user-data index: %w", err)
		}
		if pub, err = (tpm2.NVReadPublic{NVIndex: UserDataIndex}).Execute(t); err != nil {
			return fmt.Errorf("azure vTPM: the user-data index: %w", err)
		}
	}
	w := tpm2.NVWrite{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: UserDataIndex, Name: pub.NVName}, Data: tpm2.TPM2BMaxNVBuffer{Buffer: ud}}
	if _, err := w.Execute(t); err != nil {
		return fmt.Errorf("azure vTPM: write the user data: %w", err)
	}
	return nil
}

// ReadNV reads a whole NV index of at most limit bytes, in chunks.
func ReadNV(t transport.TPM, idx tpm2.TPMHandle, limit int) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(t)
	if err != nil {
		return nil, err
	}
	np, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	if int(np.DataSize) > limit {
		return nil, fmt.Errorf("NV index %#x holds %d bytes; at most %d are read", idx, np.DataSize, limit)
	}
	out := make([]byte, 0, np.DataSize)
	for off := 0; off < int(np.DataSize); {
		n := min(maxNVChunk, int(np.DataSize)-off)
		r, err := tpm2.NVRead{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: idx, Name: pub.NVName}, Size: uint16(n), Offset: uint16(off)}.Execute(t)
		if err != nil {
			return nil, err
		}
		if len(r.Data.Buffer) == 0 {
			return nil, fmt.Errorf("NV index %#x: empty read at %d", idx, off)
		}
		out = append(out, r.Data.Buffer...)
		off += len(r.Data.Buffer)
	}
	return out, nil
}

// allPCRs selects PCRs 0-23 of the SHA-256 bank.
var allPCRs = []byte{0xff, 0xff, 0xff}

// Quote quotes PCRs 0-23 (SHA-256) with the attestation key and nonce as
// qualifying data, and reads their values.
func Quote(t transport.TPM, nonce []byte) (*TPMQuote, error) {
	rp, err := tpm2.ReadPublic{ObjectHandle: AKHandle}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: the attestation key at %#x: %w", AKHandle, err)
	}
	sel := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: allPCRs}}}
	q, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: AKHandle, Name: rp.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
		PCRSelect:      sel,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: quote: %w", err)
	}
	rsa, err := q.Signature.Signature.RSASSA()
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: the quote's signature is not RSASSA: %w", err)
	}
	out := &TPMQuote{Signature: hex.EncodeToString(rsa.Sig.Buffer), Message: hex.EncodeToString(q.Quoted.Bytes())}
	vals, err := ReadPCRs(t)
	if err != nil {
		return nil, err
	}
	for _, v := range vals {
		out.PCRs = append(out.PCRs, hex.EncodeToString(v))
	}
	return out, nil
}

// ReadPCRs reads PCRs 0-23 of the SHA-256 bank (a TPM returns at most 8
// per command).
func ReadPCRs(t transport.TPM) ([][]byte, error) {
	vals := make([][]byte, 0, 24)
	for len(vals) < 24 {
		sel := make([]byte, 3)
		for i := len(vals); i < 24; i++ {
			sel[i/8] |= 1 << (i % 8)
		}
		r, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: sel}}}}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("azure vTPM: read the PCRs: %w", err)
		}
		if len(r.PCRValues.Digests) == 0 {
			return nil, errors.New("azure vTPM: the TPM returned no PCR values")
		}
		for _, d := range r.PCRValues.Digests {
			vals = append(vals, d.Buffer)
		}
	}
	return vals[:24], nil
}

// InitDataPCR is the PCR into which the guest extends the digest of its
// init data (policy), as guest-components does on Azure CVMs: where
// HOST_DATA is the host's and not the workload owner's, the policy is
// bound through it.
const InitDataPCR = 8

// ExtendPCR extends a SHA-256 PCR with digest.
func ExtendPCR(t transport.TPM, index uint32, digest [32]byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(index), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:]}}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("azure vTPM: extend PCR %d: %w", index, err)
	}
	return nil
}
