package sim

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"cocoon.dev/cocoon/tee/azvtpm"
)

// Paravisor stands in for the paravisor (HCL) of an Azure confidential VM
// in front of a TPM — swtpm, in tests and demos: it provisions the vTPM's
// attestation key, keeps an HCL report in the report NV index, and
// whenever the guest writes the user-data index it puts a fresh HCL report
// there, whose SNP report (signed by this authority, so INSECURE) binds
// runtime data carrying the attestation key and the user data — what
// Azure's paravisor does with the real secure processor.
type Paravisor struct {
	tpm    transport.TPM
	auth   *Authority
	launch Launch
	ak     *rsa.PublicKey
	mu     sync.Mutex
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// NewParavisor provisions t (a fresh TPM) as Azure's vTPM for launch l:
// the attestation key at azvtpm.AKHandle and the HCL report index.
func (a *Authority) NewParavisor(t transport.TPM, l Launch) (*Paravisor, error) {
	p := &Paravisor{tpm: t, auth: a, launch: l}
	tmpl := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Restricted: true, SignEncrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme:  tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
	}
	cp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)}, InPublic: tpm2.New2B(tmpl)}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("sim paravisor: create the attestation key: %w", err)
	}
	defer func() { _, _ = tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(t) }()
	if _, err := (tpm2.EvictControl{Auth: ownerAuth, ObjectHandle: tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name}, PersistentHandle: azvtpm.AKHandle}).Execute(t); err != nil {
		return nil, fmt.Errorf("sim paravisor: persist the attestation key: %w", err)
	}
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		return nil, err
	}
	parms, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, err
	}
	uniq, err := pub.Unique.RSA()
	if err != nil {
		return nil, err
	}
	if p.ak, err = tpm2.RSAPub(parms, uniq); err != nil {
		return nil, err
	}
	report, err := p.report(make([]byte, azvtpm.UserDataSize))
	if err != nil {
		return nil, err
	}
	def := tpm2.NVDefineSpace{AuthHandle: ownerAuth, PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
		NVIndex: azvtpm.HCLReportIndex, NameAlg: tpm2.TPMAlgSHA256, DataSize: uint16(len(report)),
		Attributes: tpm2.TPMANV{OwnerWrite: true, OwnerRead: true, AuthWrite: true, AuthRead: true, NoDA: true},
	})}
	if _, err := def.Execute(t); err != nil {
		return nil, fmt.Errorf("sim paravisor: define the HCL report index (%d bytes): %w", len(report), err)
	}
	if err := p.store(report); err != nil {
		return nil, err
	}
	return p, nil
}

// Send implements transport.TPM: commands go to the TPM; a successful
// write of the user-data index is followed by a fresh HCL report.
func (p *Paravisor) Send(cmd []byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rsp, err := p.tpm.Send(cmd)
	if err != nil || len(cmd) < 18 || len(rsp) < 10 {
		return rsp, err
	}
	be := binary.BigEndian
	if tpm2.TPMCC(be.Uint32(cmd[6:])) != tpm2.TPMCCNVWrite || tpm2.TPMHandle(be.Uint32(cmd[14:])) != azvtpm.UserDataIndex || be.Uint32(rsp[6:]) != 0 {
		return rsp, nil
	}
	ud, err := azvtpm.ReadNV(p.tpm, azvtpm.UserDataIndex, azvtpm.UserDataSize)
	if err != nil {
		return nil, fmt.Errorf("sim paravisor: read the user data: %w", err)
	}
	report, err := p.report(ud)
	if err != nil {
		return nil, err
	}
	if err := p.store(report); err != nil {
		return nil, err
	}
	return rsp, nil
}

// VCEK returns the VCEK that signs the paravisor's SNP reports (Azure's
// instance metadata service serves the real one).
func (p *Paravisor) VCEK() []byte { return p.auth.Vcek.Raw }

// report builds an HCL report: the 32-byte header, the SNP report binding
// SHA-256 of the runtime data, the runtime data header and the runtime
// data (the attestation key as a JWK, the VM configuration, the user data).
func (p *Paravisor) report(userData []byte) ([]byte, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	rt := map[string]any{
		"keys": []map[string]any{{
			"kid": "HCLAkPub", "key_ops": []string{"sign"}, "kty": "RSA",
			"e": b64(big.NewInt(int64(p.ak.E)).Bytes()), "n": b64(p.ak.N.Bytes()),
		}},
		"vm-configuration": map[string]any{"console-enabled": false, "secure-boot": true, "tpm-enabled": true, "vmUniqueId": "cocoon-simulated-paravisor"},
		"user-data":        hex.EncodeToString(userData),
	}
	varData, err := json.Marshal(rt)
	if err != nil {
		return nil, err
	}
	var rd [64]byte
	h := sha256.Sum256(varData)
	copy(rd[:], h[:])
	snp, err := p.auth.Report(p.launch, rd)
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	hdr := make([]byte, 32)
	copy(hdr, "HCLA")
	le.PutUint32(hdr[4:], 2)                // version
	le.PutUint32(hdr[8:], uint32(len(snp))) // report size
	le.PutUint32(hdr[12:], 2)               // request type: attestation report
	out := append(hdr, snp...)
	rth := make([]byte, 20)
	le.PutUint32(rth[0:], uint32(20+len(varData)))
	le.PutUint32(rth[4:], 1)  // version
	le.PutUint32(rth[8:], 2)  // report type: SEV-SNP
	le.PutUint32(rth[12:], 1) // hash type: SHA-256
	le.PutUint32(rth[16:], uint32(len(varData)))
	out = append(out, rth...)
	return append(out, varData...), nil
}

// store writes the HCL report index in chunks.
func (p *Paravisor) store(report []byte) error {
	pub, err := tpm2.NVReadPublic{NVIndex: azvtpm.HCLReportIndex}.Execute(p.tpm)
	if err != nil {
		return err
	}
	for off := 0; off < len(report); off += 1024 {
		chunk := report[off:min(off+1024, len(report))]
		w := tpm2.NVWrite{AuthHandle: ownerAuth, NVIndex: tpm2.NamedHandle{Handle: azvtpm.HCLReportIndex, Name: pub.NVName}, Data: tpm2.TPM2BMaxNVBuffer{Buffer: chunk}, Offset: uint16(off)}
		if _, err := w.Execute(p.tpm); err != nil {
			return fmt.Errorf("sim paravisor: write the HCL report: %w", err)
		}
		// Name changes after the first write (TPMA_NV_WRITTEN).
		if pub, err = (tpm2.NVReadPublic{NVIndex: azvtpm.HCLReportIndex}).Execute(p.tpm); err != nil {
			return err
		}
	}
	return nil
}
