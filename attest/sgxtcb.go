package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// SGX TCB status from Intel's collateral: the TCB info of the platform's
// FMSPC (the TCB levels of its CPU SVN components and PCE SVN) and the
// Quoting Enclave's identity, both signed by Intel's TCB Signing key. go-
// tdx-guest evaluates TDX collateral only, so the SGX rules are written
// here on its PCS types (pcs.TcbInfo, pcs.EnclaveIdentity) and PCK
// extension parser: match the first TCB level whose components and PCE SVN
// the platform meets; the QE identity must match the QE report (MRSIGNER,
// ISVPRODID, masked MISCSELECT and ATTRIBUTES) and its ISVSVN picks the
// QE's level; the worse of the two is the status.

//go:embed intel-tcb-signing-2025.pem
var intelTCBSigning2025 []byte

// sgxCollateral is what a collateral directory holds for SGX.
type sgxCollateral struct {
	tcbInfo    map[string]signedDoc // by lowercase FMSPC
	qeIdentity *signedDoc
}

// signedDoc is a PCS document: its exact signed bytes and signature.
type signedDoc struct {
	body []byte
	sig  []byte
	file string
}

// loadSGXCollateral reads the SGX TCB info and QE identity documents of
// dir (Intel PCS responses saved to files, recognised by content).
func loadSGXCollateral(dir string) (*sgxCollateral, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("SGX collateral: %w", err)
	}
	out := &sgxCollateral{tcbInfo: map[string]signedDoc{}}
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 || b[0] != '{' || len(b) > 1<<20 {
			continue
		}
		var doc struct {
			TcbInfo         json.RawMessage `json:"tcbInfo"`
			EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
			Signature       string          `json:"signature"`
		}
		if json.Unmarshal(b, &doc) != nil {
			continue
		}
		sig, err := hex.DecodeString(doc.Signature)
		if err != nil || len(sig) != 64 {
			continue
		}
		switch {
		case doc.TcbInfo != nil:
			var head struct {
				ID    string `json:"id"`
				Fmspc string `json:"fmspc"`
			}
			if json.Unmarshal(doc.TcbInfo, &head) == nil && (head.ID == "" || head.ID == "SGX") {
				out.tcbInfo[strings.ToLower(head.Fmspc)] = signedDoc{doc.TcbInfo, sig, path}
			}
		case doc.EnclaveIdentity != nil:
			var head struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(doc.EnclaveIdentity, &head) == nil && head.ID == "QE" {
				out.qeIdentity = &signedDoc{doc.EnclaveIdentity, sig, path}
			}
		}
	}
	return out, nil
}

// checkTCBSigned checks a document's signature by Intel's TCB Signing key:
// one of the TCB Signing certificates cocoon carries (the 2018 and the
// 2025 issue, one key) that chains to the SGX Root CA at now.
func checkTCBSigned(d signedDoc, now time.Time) error {
	root, err := intelSGXRoot()
	if err != nil {
		return err
	}
	certs, err := parsePEMCerts(append(append([]byte(nil), intelTCBSigningChain...), intelTCBSigning2025...))
	if err != nil {
		return err
	}
	h := sha256.Sum256(d.body)
	r, s := new(big.Int).SetBytes(d.sig[:32]), new(big.Int).SetBytes(d.sig[32:])
	var why error = errors.New("no TCB Signing certificate is valid then")
	for _, c := range certs {
		if c.Subject.CommonName != "Intel SGX TCB Signing" {
			continue
		}
		if now.Before(c.NotBefore) || now.After(c.NotAfter) || c.CheckSignatureFrom(root) != nil {
			continue
		}
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			continue
		}
		if ecdsa.Verify(pub, h[:], r, s) {
			return nil
		}
		why = errors.New("the signature is not Intel's TCB Signing key's")
	}
	return fmt.Errorf("%s: %w", filepath.Base(d.file), why)
}

// sgxTCBLevel is a TCB level in either TCB info version: version 2 lists
// the components as sgxtcbcomp01svn..16, version 3 as sgxtcbcomponents.
type sgxTCBLevel struct {
	svn      [16]byte
	pcesvn   uint16
	status   string
	advisory []string
	tcbDate  string
}

func parseSGXTCBInfo(body []byte) (*pcs.TcbInfo, []sgxTCBLevel, error) {
	var info pcs.TcbInfo
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, nil, fmt.Errorf("SGX TCB info: %w", err)
	}
	var raw struct {
		TcbLevels []struct {
			Tcb map[string]json.RawMessage `json:"tcb"`
		} `json:"tcbLevels"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, nil, fmt.Errorf("SGX TCB info: %w", err)
	}
	if len(raw.TcbLevels) != len(info.TcbLevels) || len(info.TcbLevels) > 256 {
		return nil, nil, errors.New("SGX TCB info: unreadable TCB levels")
	}
	levels := make([]sgxTCBLevel, len(info.TcbLevels))
	for i, l := range info.TcbLevels {
		lv := sgxTCBLevel{pcesvn: l.Tcb.Pcesvn, status: string(l.TcbStatus), advisory: l.AdvisoryIDs, tcbDate: l.TcbDate}
		switch info.Version {
		case 3:
			if len(l.Tcb.SgxTcbcomponents) != 16 {
				return nil, nil, fmt.Errorf("SGX TCB info: level %d has %d SGX TCB components, not 16", i, len(l.Tcb.SgxTcbcomponents))
			}
			for j, c := range l.Tcb.SgxTcbcomponents {
				lv.svn[j] = c.Svn
			}
		case 2:
			for j := range 16 {
				v, ok := raw.TcbLevels[i].Tcb[fmt.Sprintf("sgxtcbcomp%02dsvn", j+1)]
				if !ok {
					return nil, nil, fmt.Errorf("SGX TCB info: level %d lacks sgxtcbcomp%02dsvn", i, j+1)
				}
				if err := json.Unmarshal(v, &lv.svn[j]); err != nil {
					return nil, nil, fmt.Errorf("SGX TCB info: level %d: %w", i, err)
				}
			}
		default:
			return nil, nil, fmt.Errorf("SGX TCB info: version %d; versions 2 and 3 are read", info.Version)
		}
		levels[i] = lv
	}
	return &info, levels, nil
}

// sgxTCBStatus evaluates the platform (PCK extensions) and the QE report
// against the collateral in dir, as of now.
func sgxTCBStatus(dir string, pck *pcs.PckExtensions, qeReport []byte, now time.Time) (status, reason string, err error) {
	col, err := loadSGXCollateral(dir)
	if err != nil {
		return "", "", err
	}
	doc, ok := col.tcbInfo[strings.ToLower(pck.FMSPC)]
	if !ok {
		return "NotEvaluated", fmt.Sprintf("no SGX TCB info for FMSPC %s in %s", pck.FMSPC, dir), nil
	}
	if err := checkTCBSigned(doc, now); err != nil {
		return "", "", fmt.Errorf("SGX TCB info %w", err)
	}
	info, levels, err := parseSGXTCBInfo(doc.body)
	if err != nil {
		return "", "", err
	}
	if now.After(info.NextUpdate) {
		return "", "", fmt.Errorf("SGX TCB info for FMSPC %s expired at %s (its nextUpdate); fetch current collateral from Intel PCS", pck.FMSPC, info.NextUpdate.Format(time.RFC3339))
	}
	if !strings.EqualFold(info.PceID, pck.PCEID) {
		return "", "", fmt.Errorf("SGX TCB info is for PCE %s, the PCK certificate names %s", info.PceID, pck.PCEID)
	}
	platform, pReason := "", ""
	for _, l := range levels {
		if pck.TCB.PCESvn < l.pcesvn || !svnAtLeast(pck.TCB.CPUSvnComponents, l.svn[:]) {
			continue
		}
		platform = l.status
		if len(l.advisory) > 0 {
			pReason = fmt.Sprintf("platform TCB level of %s: %s (advisories %s)", l.tcbDate, l.status, strings.Join(l.advisory, ", "))
		} else {
			pReason = fmt.Sprintf("platform TCB level of %s: %s", l.tcbDate, l.status)
		}
		break
	}
	if platform == "" {
		return "Unrecognized", fmt.Sprintf("no TCB level in the collateral for FMSPC %s matches this platform's SVNs", pck.FMSPC), nil
	}
	if col.qeIdentity == nil {
		return platform, pReason + "; the Quoting Enclave was not evaluated (no QE identity in " + dir + ")", nil
	}
	qe, qeReason, err := qeStatus(*col.qeIdentity, qeReport, now)
	if err != nil {
		return "", "", err
	}
	return convergeTCB(platform, qe), pReason + "; " + qeReason, nil
}

func svnAtLeast(have, want []byte) bool {
	if len(have) < len(want) {
		return false
	}
	for i := range want {
		if have[i] < want[i] {
			return false
		}
	}
	return true
}

// qeStatus checks the QE report against Intel's QE identity.
func qeStatus(d signedDoc, qeReport []byte, now time.Time) (string, string, error) {
	if err := checkTCBSigned(d, now); err != nil {
		return "", "", fmt.Errorf("QE identity %w", err)
	}
	return qeIdentityStatus(d.body, qeReport, now)
}

// qeIdentityStatus matches the QE report with a (verified) QE identity.
func qeIdentityStatus(body, qeReport []byte, now time.Time) (string, string, error) {
	var id pcs.EnclaveIdentity
	if err := json.Unmarshal(body, &id); err != nil {
		return "", "", fmt.Errorf("QE identity: %w", err)
	}
	if now.After(id.NextUpdate) {
		return "", "", fmt.Errorf("the QE identity expired at %s (its nextUpdate); fetch current collateral from Intel PCS", id.NextUpdate.Format(time.RFC3339))
	}
	le := binary.LittleEndian
	if !bytes.Equal(qeReport[128:160], id.Mrsigner.Bytes) {
		return "", "", fmt.Errorf("the Quoting Enclave's MRSIGNER %x is not Intel's (%x)", qeReport[128:160], id.Mrsigner.Bytes)
	}
	if p := le.Uint16(qeReport[256:]); p != id.IsvProdID {
		return "", "", fmt.Errorf("the Quoting Enclave's ISVPRODID is %d, Intel's QE is %d", p, id.IsvProdID)
	}
	if !maskedEqual(qeReport[16:20], id.Miscselect.Bytes, id.MiscselectMask.Bytes) {
		return "", "", errors.New("the Quoting Enclave's MISCSELECT does not match Intel's QE identity")
	}
	if !maskedEqual(qeReport[48:64], id.Attributes.Bytes, id.AttributesMask.Bytes) {
		return "", "", errors.New("the Quoting Enclave's ATTRIBUTES do not match Intel's QE identity")
	}
	svn := uint32(le.Uint16(qeReport[258:]))
	for _, l := range id.TcbLevels {
		if svn >= l.Tcb.Isvsvn {
			return string(l.TcbStatus), fmt.Sprintf("Quoting Enclave ISVSVN %d: %s", svn, l.TcbStatus), nil
		}
	}
	return "Revoked", fmt.Sprintf("Quoting Enclave ISVSVN %d is below every level of its identity", svn), nil
}

// maskedEqual compares have and want under mask (the QE identity writes
// MISCSELECT as big-endian hex of the little-endian field's bytes, in
// report order, so bytes compare in order).
func maskedEqual(have, want, mask []byte) bool {
	if len(want) != len(have) || len(mask) != len(have) {
		return false
	}
	for i := range have {
		if have[i]&mask[i] != want[i]&mask[i] {
			return false
		}
	}
	return true
}

// convergeTCB combines the platform's and the Quoting Enclave's status as
// Intel's quote verification library does: a revoked part revokes; an
// out-of-date QE makes an up-to-date or hardening-needed platform out of
// date, a configuration-needed one out of date and configuration needed.
func convergeTCB(platform, qe string) string {
	switch {
	case platform == "Revoked" || qe == "Revoked":
		return "Revoked"
	case qe != "OutOfDate":
		return platform
	case platform == "UpToDate" || platform == "SWHardeningNeeded":
		return "OutOfDate"
	case platform == "ConfigurationNeeded" || platform == "ConfigurationAndSWHardeningNeeded":
		return "OutOfDateConfigurationNeeded"
	}
	return platform
}
