// Package tee is the attester side of remote attestation: the Attester
// interface every TEE backend implements, TEE detection, and the JSON
// evidence envelope that carries a report from the TEE to a verifier.
package tee

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
)

// Kind names a TEE.
type Kind string

// The TEEs cocoon knows.
const (
	SNP Kind = "snp"
	TDX Kind = "tdx"
	// Sim is the simulated secure processor: for development only, never
	// trusted by default.
	Sim Kind = "sim"
	// SGX is an Intel SGX enclave: Report is its DCAP quote (version 3).
	// No sandbox runs in one; enclave apps attest to the key broker.
	SGX Kind = "sgx"
	// AzureSNP and AzureTDX are Azure confidential VMs, whose paravisor
	// keeps the hardware report and proves the guest's state with its
	// vTPM: Report is the evidence JSON {"version", "hcl_report",
	// "tpm_quote", "vcek" | "td_quote"} (attest.AzureEvidence), and the
	// TPM quote's qualifying data, not the hardware REPORT_DATA, carries
	// the binding. The names are the KBS protocol's.
	AzureSNP Kind = "az-snp-vtpm"
	AzureTDX Kind = "az-tdx-vtpm"
)

// Kinds lists the TEEs an evidence envelope may name.
func Kinds() []Kind { return []Kind{SNP, TDX, Sim, SGX, AzureSNP, AzureTDX} }

// Evidence is the JSON envelope that carries a report to a verifier:
//
//	{"tee":"snp|tdx|sim|sgx|az-snp-vtpm|az-tdx-vtpm", "report":"<b64 raw>", "certs":{...},
//	 "runtime_data":"<b64>", "binding":"cocoon/v1/host-challenge"}
//
// Report is the raw hardware report (SNP, sim), quote (TDX, SGX) or Azure
// vTPM evidence JSON (see the kinds). Certs holds
// certificates by role ("vcek", "ask", "ark", "vlek") as DER. RuntimeData is
// what the report's REPORT_DATA binds, under Binding: REPORT_DATA =
// Binding.ReportData(runtime_data). A verifier decides which binding it
// accepts; the envelope's word only names it.
type Evidence struct {
	TEE         Kind              `json:"tee"`
	Report      []byte            `json:"report"`
	Certs       map[string][]byte `json:"certs,omitempty"`
	RuntimeData []byte            `json:"runtime_data,omitempty"`
	Binding     Binding           `json:"binding,omitempty"`
}

// Attester produces evidence from the TEE it runs in.
type Attester interface {
	// Kind is the TEE this attester talks to.
	Kind() Kind
	// Evidence returns a fresh report whose REPORT_DATA is reportData.
	Evidence(ctx context.Context, reportData [64]byte) (*Evidence, error)
}

// MaxEvidenceBytes bounds an evidence envelope; real ones are under 16 KiB.
const MaxEvidenceBytes = 1 << 20

// ParseEvidence decodes an evidence envelope strictly: unknown fields, an
// unknown TEE or an empty report are errors.
func ParseEvidence(b []byte) (*Evidence, error) {
	if len(b) > MaxEvidenceBytes {
		return nil, fmt.Errorf("evidence is %d bytes; at most %d are accepted", len(b), MaxEvidenceBytes)
	}
	var e Evidence
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("evidence envelope: %w", err)
	}
	if dec.More() {
		return nil, errors.New("evidence envelope: trailing data after the JSON object")
	}
	switch {
	case e.TEE == "":
		return nil, fmt.Errorf(`evidence envelope: "tee" is missing; want one of %v`, Kinds())
	case !slices.Contains(Kinds(), e.TEE):
		return nil, fmt.Errorf("evidence envelope: unknown tee %q; want one of %v", e.TEE, Kinds())
	}
	if len(e.Report) == 0 {
		return nil, errors.New(`evidence envelope: "report" is empty`)
	}
	if e.Binding != "" {
		if _, err := ParseBinding(string(e.Binding)); err != nil {
			return nil, fmt.Errorf("evidence envelope: %w", err)
		}
	}
	return &e, nil
}

// Detect reports which hardware TEE this machine is a guest of, from the
// devices and configfs-tsm the kernel exposes; "" when there is none.
func Detect() Kind {
	if _, err := os.Stat("/dev/sev-guest"); err == nil {
		return SNP
	}
	if _, err := os.Stat("/dev/tdx_guest"); err == nil {
		return TDX
	}
	if b, err := os.ReadFile("/sys/kernel/config/tsm/report/provider"); err == nil {
		switch string(b) {
		case "sev_guest\n", "sev_guest":
			return SNP
		case "tdx_guest\n", "tdx_guest":
			return TDX
		}
	}
	return ""
}

// CanonicalJSON encodes v as RFC 8785 (JCS) canonical JSON for the values
// runtime data holds: objects with sorted keys, strings, booleans, null,
// arrays and integers; no insignificant whitespace, no HTML escaping.
func CanonicalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
