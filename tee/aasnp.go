package tee

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// The attestation agent's SEV-SNP evidence (guest-components' SNP attester,
// what Trustee's SNP verifier reads): {"attestation_report": <the virtee
// sev crate's AttestationReport, serialised field by field>, "cert_chain":
// [{"cert_type": "VCEK", "data": [..bytes..]}, ...]}. SNPToAA writes it
// from a raw report, SNPFromAA reads the raw report back (reserved bytes
// are zero, as the hardware writes them; a report that had other bytes
// there fails its signature check, never passes it).

// aaTCB is a TCB_VERSION as the sev crate splits it: with an FMC field
// (Turin layout) or without (Milan, Genoa).
type aaTCB struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

type aaVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

type aaSignature struct {
	R aaBytes `json:"r"`
	S aaBytes `json:"s"`
}

// aaBytes marshals as a JSON array of numbers (serde's [u8; N]), not base64.
type aaBytes []byte

func (b aaBytes) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, c := range b {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, "%d", c)
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

func (b *aaBytes) UnmarshalJSON(d []byte) error {
	var n []uint8
	if err := json.Unmarshal(d, &n); err != nil {
		var ints []uint16 // a number past 255 says what was wrong
		if json.Unmarshal(d, &ints) == nil {
			return errors.New("a byte array holds a number past 255")
		}
		return err
	}
	*b = n
	return nil
}

// aaReport mirrors the sev crate's AttestationReport, field order kept.
type aaReport struct {
	Version          uint32      `json:"version"`
	GuestSVN         uint32      `json:"guest_svn"`
	Policy           uint64      `json:"policy"`
	FamilyID         aaBytes     `json:"family_id"`
	ImageID          aaBytes     `json:"image_id"`
	VMPL             uint32      `json:"vmpl"`
	SigAlgo          uint32      `json:"sig_algo"`
	CurrentTCB       aaTCB       `json:"current_tcb"`
	PlatInfo         uint64      `json:"plat_info"`
	KeyInfo          uint32      `json:"key_info"`
	ReportData       aaBytes     `json:"report_data"`
	Measurement      aaBytes     `json:"measurement"`
	HostData         aaBytes     `json:"host_data"`
	IDKeyDigest      aaBytes     `json:"id_key_digest"`
	AuthorKeyDigest  aaBytes     `json:"author_key_digest"`
	ReportID         aaBytes     `json:"report_id"`
	ReportIDMA       aaBytes     `json:"report_id_ma"`
	ReportedTCB      aaTCB       `json:"reported_tcb"`
	CPUIDFamID       *uint8      `json:"cpuid_fam_id"`
	CPUIDModID       *uint8      `json:"cpuid_mod_id"`
	CPUIDStep        *uint8      `json:"cpuid_step"`
	ChipID           aaBytes     `json:"chip_id"`
	CommittedTCB     aaTCB       `json:"committed_tcb"`
	Current          aaVersion   `json:"current"`
	Committed        aaVersion   `json:"committed"`
	LaunchTCB        aaTCB       `json:"launch_tcb"`
	LaunchMitVector  *uint64     `json:"launch_mit_vector"`
	CurrentMitVector *uint64     `json:"current_mit_vector"`
	Signature        aaSignature `json:"signature"`
}

type aaCert struct {
	CertType string  `json:"cert_type"`
	Data     aaBytes `json:"data"`
}

type aaSNPEvidence struct {
	AttestationReport aaReport `json:"attestation_report"`
	CertChain         []aaCert `json:"cert_chain"`
}

// SNPReportSize is an SEV-SNP report's size.
const SNPReportSize = 0x4A0

// turinLayout reports whether a report's TCB fields use the Turin layout,
// as the sev crate decides: by CPUID family (version 3 and later), else by
// a chip id whose last 56 bytes are zero.
func turinLayout(r []byte) bool {
	if binary.LittleEndian.Uint32(r) >= 3 {
		return r[0x188] == 0x1A
	}
	chip := r[0x1A0:0x1E0]
	return !bytes.Equal(chip, make([]byte, 64)) && bytes.Equal(chip[8:], make([]byte, 56))
}

func splitTCB(v []byte, turin bool) aaTCB {
	if turin {
		f := v[0]
		return aaTCB{FMC: &f, Bootloader: v[1], TEE: v[2], SNP: v[3], Microcode: v[7]}
	}
	return aaTCB{Bootloader: v[0], TEE: v[1], SNP: v[6], Microcode: v[7]}
}

func joinTCB(t aaTCB) []byte {
	v := make([]byte, 8)
	if t.FMC != nil {
		v[0], v[1], v[2], v[3], v[7] = *t.FMC, t.Bootloader, t.TEE, t.SNP, t.Microcode
	} else {
		v[0], v[1], v[6], v[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
	}
	return v
}

// certRoles maps the envelope's certificate roles to the sev crate's types.
var certRoles = [][2]string{{"vcek", "VCEK"}, {"vlek", "VLEK"}, {"ask", "ASK"}, {"ark", "ARK"}}

// SNPToAA writes a raw SNP report and its certificates (by role: vcek,
// vlek, ask, ark; DER) as the attestation agent's SNP evidence.
func SNPToAA(r []byte, certs map[string][]byte) ([]byte, error) {
	if len(r) != SNPReportSize {
		return nil, fmt.Errorf("an SNP report is %d bytes, not %d", SNPReportSize, len(r))
	}
	le := binary.LittleEndian
	turin := turinLayout(r)
	b := func(lo, hi int) aaBytes { return aaBytes(append([]byte(nil), r[lo:hi]...)) }
	rep := aaReport{
		Version: le.Uint32(r[0:]), GuestSVN: le.Uint32(r[4:]), Policy: le.Uint64(r[8:]),
		FamilyID: b(0x10, 0x20), ImageID: b(0x20, 0x30), VMPL: le.Uint32(r[0x30:]), SigAlgo: le.Uint32(r[0x34:]),
		CurrentTCB: splitTCB(r[0x38:0x40], turin), PlatInfo: le.Uint64(r[0x40:]), KeyInfo: le.Uint32(r[0x48:]),
		ReportData: b(0x50, 0x90), Measurement: b(0x90, 0xC0), HostData: b(0xC0, 0xE0),
		IDKeyDigest: b(0xE0, 0x110), AuthorKeyDigest: b(0x110, 0x140), ReportID: b(0x140, 0x160), ReportIDMA: b(0x160, 0x180),
		ReportedTCB: splitTCB(r[0x180:0x188], turin), ChipID: b(0x1A0, 0x1E0), CommittedTCB: splitTCB(r[0x1E0:0x1E8], turin),
		Current: aaVersion{Build: r[0x1E8], Minor: r[0x1E9], Major: r[0x1EA]}, Committed: aaVersion{Build: r[0x1EC], Minor: r[0x1ED], Major: r[0x1EE]},
		LaunchTCB: splitTCB(r[0x1F0:0x1F8], turin),
		Signature: aaSignature{R: b(0x2A0, 0x2A0+72), S: b(0x2A0+72, 0x2A0+144)},
	}
	if rep.Version >= 3 {
		f, m, s := r[0x188], r[0x189], r[0x18A]
		rep.CPUIDFamID, rep.CPUIDModID, rep.CPUIDStep = &f, &m, &s
	}
	if rep.Version >= 5 {
		lm, cm := le.Uint64(r[0x1F8:]), le.Uint64(r[0x200:])
		rep.LaunchMitVector, rep.CurrentMitVector = &lm, &cm
	}
	ev := aaSNPEvidence{AttestationReport: rep, CertChain: []aaCert{}}
	for _, rc := range certRoles {
		if c := certs[rc[0]]; len(c) > 0 {
			ev.CertChain = append(ev.CertChain, aaCert{CertType: rc[1], Data: aaBytes(c)})
		}
	}
	return json.Marshal(ev)
}

// IsAASNP reports whether b looks like the attestation agent's SNP evidence.
func IsAASNP(b []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return false
	}
	_, ok := m["attestation_report"]
	return ok
}

// SNPFromAA reads the attestation agent's SNP evidence back into a raw
// report and certificates by role.
func SNPFromAA(b []byte) ([]byte, map[string][]byte, error) {
	if len(b) > MaxEvidenceBytes {
		return nil, nil, fmt.Errorf("evidence is %d bytes; at most %d are accepted", len(b), MaxEvidenceBytes)
	}
	var ev aaSNPEvidence
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return nil, nil, fmt.Errorf("SNP evidence: %w", err)
	}
	a := &ev.AttestationReport
	for _, f := range []struct {
		name string
		v    []byte
		n    int
	}{{"family_id", a.FamilyID, 16}, {"image_id", a.ImageID, 16}, {"report_data", a.ReportData, 64}, {"measurement", a.Measurement, 48},
		{"host_data", a.HostData, 32}, {"id_key_digest", a.IDKeyDigest, 48}, {"author_key_digest", a.AuthorKeyDigest, 48},
		{"report_id", a.ReportID, 32}, {"report_id_ma", a.ReportIDMA, 32}, {"chip_id", a.ChipID, 64},
		{"signature.r", a.Signature.R, 72}, {"signature.s", a.Signature.S, 72}} {
		if len(f.v) != f.n {
			return nil, nil, fmt.Errorf("SNP evidence: %s is %d bytes, not %d", f.name, len(f.v), f.n)
		}
	}
	if a.Version < 2 {
		return nil, nil, fmt.Errorf("SNP evidence: report version %d is not supported", a.Version)
	}
	r := make([]byte, SNPReportSize)
	le := binary.LittleEndian
	le.PutUint32(r[0:], a.Version)
	le.PutUint32(r[4:], a.GuestSVN)
	le.PutUint64(r[8:], a.Policy)
	copy(r[0x10:], a.FamilyID)
	copy(r[0x20:], a.ImageID)
	le.PutUint32(r[0x30:], a.VMPL)
	le.PutUint32(r[0x34:], a.SigAlgo)
	copy(r[0x38:], joinTCB(a.CurrentTCB))
	le.PutUint64(r[0x40:], a.PlatInfo)
	le.PutUint32(r[0x48:], a.KeyInfo)
	copy(r[0x50:], a.ReportData)
	copy(r[0x90:], a.Measurement)
	copy(r[0xC0:], a.HostData)
	copy(r[0xE0:], a.IDKeyDigest)
	copy(r[0x110:], a.AuthorKeyDigest)
	copy(r[0x140:], a.ReportID)
	copy(r[0x160:], a.ReportIDMA)
	copy(r[0x180:], joinTCB(a.ReportedTCB))
	if a.Version >= 3 {
		if a.CPUIDFamID == nil || a.CPUIDModID == nil || a.CPUIDStep == nil {
			return nil, nil, errors.New("SNP evidence: a version 3 report needs cpuid_fam_id, cpuid_mod_id and cpuid_step")
		}
		r[0x188], r[0x189], r[0x18A] = *a.CPUIDFamID, *a.CPUIDModID, *a.CPUIDStep
	}
	copy(r[0x1A0:], a.ChipID)
	copy(r[0x1E0:], joinTCB(a.CommittedTCB))
	r[0x1E8], r[0x1E9], r[0x1EA] = a.Current.Build, a.Current.Minor, a.Current.Major
	r[0x1EC], r[0x1ED], r[0x1EE] = a.Committed.Build, a.Committed.Minor, a.Committed.Major
	copy(r[0x1F0:], joinTCB(a.LaunchTCB))
	if a.Version >= 5 {
		if a.LaunchMitVector == nil || a.CurrentMitVector == nil {
			return nil, nil, errors.New("SNP evidence: a version 5 report needs launch_mit_vector and current_mit_vector")
		}
		le.PutUint64(r[0x1F8:], *a.LaunchMitVector)
		le.PutUint64(r[0x200:], *a.CurrentMitVector)
	}
	copy(r[0x2A0:], a.Signature.R)
	copy(r[0x2A0+72:], a.Signature.S)
	certs := map[string][]byte{}
	for _, c := range ev.CertChain {
		role := ""
		for _, rc := range certRoles {
			if rc[1] == c.CertType {
				role = rc[0]
			}
		}
		if role == "" {
			continue // CRLs and other entries: the verifier fetches what it needs
		}
		certs[role] = c.Data
	}
	return r, certs, nil
}
