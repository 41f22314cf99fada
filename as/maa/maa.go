// Package maa is the wire side of Microsoft Azure Attestation's SEV-SNP
// attestation request (POST /attest/SevSnpVm, api-version 2022-08-01), as
// the Azure SKR sidecar sends it, and the names of the claims MAA puts in
// its tokens. It is a leaf: the agent builds requests with it without
// linking the attestation service.
package maa

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

// APIVersion is the MAA API version requested and served.
const APIVersion = "2022-08-01"

// Path is the SEV-SNP attestation route.
const Path = "/attest/SevSnpVm"

// Data is runtime or init-time data: base64url bytes and their type
// ("JSON" or "Binary").
type Data struct {
	Data     string `json:"data"`
	DataType string `json:"dataType"`
}

// Request is the body of POST /attest/SevSnpVm.
type Request struct {
	// Report is base64url of the JSON Report.
	Report       string `json:"report"`
	RuntimeData  Data   `json:"runtimeData"`
	InitTimeData *Data  `json:"initTimeData,omitempty"`
	Nonce        uint64 `json:"nonce,omitempty"`
}

// Report carries the SNP report and the VCEK certificate chain.
type Report struct {
	SNPReport    string `json:"SnpReport"`     // base64url of the raw report
	CertChain    string `json:"VcekCertChain"` // base64url of PEM: VCEK, ASK, ARK
	Endorsements string `json:"Endorsements,omitempty"`
}

// ReportData is the REPORT_DATA MAA expects for runtime data: SHA-256 of
// its bytes, zero-padded.
func ReportData(runtimeData []byte) [64]byte {
	var out [64]byte
	h := sha256.Sum256(runtimeData)
	copy(out[:], h[:])
	return out
}

// NewRequest builds a request for a raw SNP report, its certificates (DER,
// VCEK first) and JSON runtime data.
func NewRequest(report []byte, certs [][]byte, runtimeData []byte) (*Request, error) {
	if !json.Valid(runtimeData) {
		return nil, errors.New("runtime data must be JSON (MAA's dataType JSON)")
	}
	var chain []byte
	for _, c := range certs {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	r, err := json.Marshal(Report{SNPReport: base64.URLEncoding.EncodeToString(report), CertChain: base64.URLEncoding.EncodeToString(chain)})
	if err != nil {
		return nil, err
	}
	return &Request{Report: base64.URLEncoding.EncodeToString(r), RuntimeData: Data{Data: base64.URLEncoding.EncodeToString(runtimeData), DataType: "JSON"}}, nil
}

// Decode reads the request's report and certificates (DER, in order) and
// runtime data.
func (r *Request) Decode() (report []byte, certs [][]byte, runtimeData []byte, err error) {
	rb, err := decodeB64(r.Report)
	if err != nil {
		return nil, nil, nil, fmt.Errorf(`"report": %w`, err)
	}
	var rep Report
	if err := json.Unmarshal(rb, &rep); err != nil {
		return nil, nil, nil, fmt.Errorf(`"report": not the JSON report: %w`, err)
	}
	if report, err = decodeB64(rep.SNPReport); err != nil || len(report) == 0 {
		return nil, nil, nil, fmt.Errorf(`"report.SnpReport": not base64url: %v`, err)
	}
	chain, err := decodeB64(rep.CertChain)
	if err != nil {
		return nil, nil, nil, fmt.Errorf(`"report.VcekCertChain": %w`, err)
	}
	for rest := chain; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			certs = append(certs, blk.Bytes)
		}
	}
	if runtimeData, err = decodeB64(r.RuntimeData.Data); err != nil {
		return nil, nil, nil, fmt.Errorf(`"runtimeData.data": %w`, err)
	}
	switch r.RuntimeData.DataType {
	case "JSON":
		if !json.Valid(runtimeData) {
			return nil, nil, nil, errors.New(`"runtimeData": dataType JSON but the data is not JSON`)
		}
	case "Binary", "":
	default:
		return nil, nil, nil, fmt.Errorf(`"runtimeData.dataType" %q: want JSON or Binary`, r.RuntimeData.DataType)
	}
	return report, certs, runtimeData, nil
}

func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.URLEncoding, base64.RawURLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

// Response is MAA's answer.
type Response struct {
	Token string `json:"token"`
}

// ErrorBody is MAA's error shape.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}
