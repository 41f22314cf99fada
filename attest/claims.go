// Package attest verifies attestation evidence from every TEE cocoon knows
// (AMD SEV-SNP, Intel TDX, the simulated TEE) behind one function, Verify,
// and turns it into one normalized, documented shape: Claims. Reference
// values (allowed measurements, policy hashes, minimum TCB, debug) are
// checked on Claims, with errors that name the field, what was expected and
// what was found.
package attest

import (
	"fmt"

	"cocoon.dev/cocoon/tee"
)

// Claims are the verified facts of one piece of evidence. Byte fields are
// lowercase hex. Measurement and HostData are normalized across TEEs:
//
//	SNP/sim: MEASUREMENT and HOST_DATA;  TDX: MRTD and MRCONFIGID.
type Claims struct {
	TEE tee.Kind `json:"tee"`
	// Platform is a human name ("AMD SEV-SNP", "Intel TDX", "simulated
	// (INSECURE)"); Product the CPU product line when known.
	Platform    string `json:"platform"`
	Product     string `json:"product,omitempty"`
	Measurement string `json:"measurement"`
	HostData    string `json:"host_data"`
	ReportData  string `json:"report_data"`
	// Debug is true when the guest can be debugged by the host (its memory
	// is then not confidential).
	Debug bool       `json:"debug"`
	SNP   *SNPClaims `json:"snp,omitempty"`
	TDX   *TDXClaims `json:"tdx,omitempty"`
	// Azure is what an Azure confidential VM's vTPM adds (VerifyAzure).
	Azure *AzureClaims `json:"azure,omitempty"`
	// SGX are an SGX enclave's facts (VerifySGX).
	SGX *SGXClaims `json:"sgx,omitempty"`
}

// TCB is an SNP TCB version, by component.
type TCB struct {
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
	Raw        string `json:"raw"`
}

func (t TCB) String() string {
	return fmt.Sprintf("bootloader=%d tee=%d snp=%d microcode=%d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

// SNPClaims are the SEV-SNP specific facts (also for sim evidence).
type SNPClaims struct {
	Version      uint32 `json:"version"`
	GuestSVN     uint32 `json:"guest_svn"`
	Policy       string `json:"policy"`
	PolicyDebug  bool   `json:"policy_debug"`
	PolicySMT    bool   `json:"policy_smt"`
	PolicyMigMA  bool   `json:"policy_migrate_ma"`
	PolicyABI    string `json:"policy_abi_min"`
	VMPL         uint32 `json:"vmpl"`
	ChipID       string `json:"chip_id"`
	Signer       string `json:"signer"`
	ReportID     string `json:"report_id"`
	PlatformInfo string `json:"platform_info"`
	ReportedTCB  TCB    `json:"reported_tcb"`
	CurrentTCB   TCB    `json:"current_tcb"`
	CommittedTCB TCB    `json:"committed_tcb"`
	LaunchTCB    TCB    `json:"launch_tcb"`
	Firmware     string `json:"firmware"`
}

// TDXClaims are the Intel TDX specific facts.
type TDXClaims struct {
	QuoteVersion  uint32    `json:"quote_version"`
	MRTD          string    `json:"mrtd"`
	RTMR          [4]string `json:"rtmr"`
	MRConfigID    string    `json:"mrconfigid"`
	MROwner       string    `json:"mrowner"`
	MROwnerConfig string    `json:"mrownerconfig"`
	MRSeam        string    `json:"mrseam"`
	TDAttributes  string    `json:"td_attributes"`
	XFAM          string    `json:"xfam"`
	TEETCBSVN     string    `json:"tee_tcb_svn"`
	FMSPC         string    `json:"fmspc,omitempty"`
	// TCBStatus is Intel's status for this platform's TCB from collateral
	// (UpToDate, OutOfDate, ...), or "NotEvaluated" with the reason.
	TCBStatus       string `json:"tcb_status"`
	TCBStatusReason string `json:"tcb_status_reason,omitempty"`
}
