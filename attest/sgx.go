package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"cocoon.dev/cocoon/tee"
)

// Intel SGX ECDSA (DCAP) quotes, version 3: a 48-byte header, the ISV
// enclave's 384-byte report body, and the signature data — the quote's
// ECDSA signature by the attestation key, that key, the Quoting Enclave's
// report signed by the platform's PCK key, the QE's authentication data
// and the PCK certificate chain. No Go library verifies SGX quotes (go-tdx-
// guest's verifier is for TD quotes and does not export its root), so the
// structure is read here; the certificates and signatures use crypto/x509
// and crypto/ecdsa, and the root is Intel's SGX Root CA, the one embedded
// with the TCB signing chain.

// SGXClaims are an SGX enclave's facts.
type SGXClaims struct {
	QuoteVersion uint16 `json:"quote_version"`
	MRENCLAVE    string `json:"mrenclave"`
	MRSIGNER     string `json:"mrsigner"`
	ISVProdID    uint16 `json:"isv_prod_id"`
	ISVSVN       uint16 `json:"isv_svn"`
	Attributes   string `json:"attributes"`
	CPUSVN       string `json:"cpu_svn"`
	MiscSelect   uint32 `json:"misc_select"`
	QESVN        uint16 `json:"qe_svn"`
	PCESVN       uint16 `json:"pce_svn"`
	FMSPC        string `json:"fmspc,omitempty"`
	// TCBStatus is Intel's status of the platform and Quoting Enclave from
	// collateral (UpToDate, SWHardeningNeeded, OutOfDate, Revoked, ...),
	// "NotEvaluated" when no collateral for its FMSPC was given, or
	// "unknown" without collateral; TCBStatusReason says why.
	TCBStatus       string `json:"tcb_status"`
	TCBStatusReason string `json:"tcb_status_reason,omitempty"`
}

const (
	sgxHeaderSize = 48
	sgxBodySize   = 384
	sgxSignedSize = sgxHeaderSize + sgxBodySize
	sgxAttrDebug  = 1 << 1 // ATTRIBUTES.FLAGS bit 1
	sgxCertPCK    = 5      // certification data: PCK certificate chain (PEM)
	// MaxSGXQuoteBytes bounds a quote: real ones are under 8 KiB.
	MaxSGXQuoteBytes = 64 << 10
)

// sgxQuote is a parsed SGX quote.
type sgxQuote struct {
	raw      []byte
	body     []byte // the ISV enclave report body
	sig      []byte // the quote signature (r || s)
	attKey   []byte // x || y
	qeReport []byte
	qeSig    []byte
	qeAuth   []byte
	pckPEM   []byte              // the PCK certificate chain (PEM)
	pck      []*x509.Certificate // leaf first, once parsed (withChain)
}

// parseSGXQuote reads an SGX DCAP quote (version 3, ECDSA P-256).
func parseSGXQuote(raw []byte) (*sgxQuote, error) {
	if len(raw) > MaxSGXQuoteBytes {
		return nil, fmt.Errorf("SGX quote: %d bytes; at most %d are accepted", len(raw), MaxSGXQuoteBytes)
	}
	if len(raw) < sgxSignedSize+4 {
		return nil, fmt.Errorf("SGX quote: %d bytes is too short", len(raw))
	}
	le := binary.LittleEndian
	if v := le.Uint16(raw); v != 3 {
		return nil, fmt.Errorf("SGX quote: version %d; version 3 is read", v)
	}
	if k := le.Uint16(raw[2:]); k != 2 {
		return nil, fmt.Errorf("SGX quote: attestation key type %d; ECDSA P-256 (2) is read", k)
	}
	if t := le.Uint32(raw[4:]); t != 0 {
		return nil, fmt.Errorf("SGX quote: TEE type %#x is not SGX (0)", t)
	}
	sigLen := le.Uint32(raw[sgxSignedSize:])
	sd := raw[sgxSignedSize+4:]
	if uint64(sigLen) != uint64(len(sd)) {
		return nil, fmt.Errorf("SGX quote: signature data is %d bytes, the quote says %d", len(sd), sigLen)
	}
	if len(sd) < 64+64+sgxBodySize+64+2 {
		return nil, errors.New("SGX quote: signature data is too short")
	}
	q := &sgxQuote{raw: raw, body: raw[sgxHeaderSize:sgxSignedSize], sig: sd[:64], attKey: sd[64:128],
		qeReport: sd[128 : 128+sgxBodySize], qeSig: sd[512:576]}
	authLen := int(le.Uint16(sd[576:]))
	rest := sd[578:]
	if authLen > len(rest) {
		return nil, errors.New("SGX quote: QE authentication data overruns the quote")
	}
	q.qeAuth, rest = rest[:authLen], rest[authLen:]
	if len(rest) < 6 {
		return nil, errors.New("SGX quote: no certification data")
	}
	certType, certLen := le.Uint16(rest), le.Uint32(rest[2:])
	rest = rest[6:]
	if uint64(certLen) > uint64(len(rest)) {
		return nil, errors.New("SGX quote: certification data overruns the quote")
	}
	if certType != sgxCertPCK {
		return nil, fmt.Errorf("SGX quote: certification data type %d; the PCK certificate chain (5) is read", certType)
	}
	q.pckPEM = rest[:certLen]
	return q, nil
}

// parseSGXQuoteChain is parseSGXQuote with the PCK chain parsed (through
// the cache, when given).
func parseSGXQuoteChain(cache *chainCache, raw []byte) (*sgxQuote, error) {
	q, err := parseSGXQuote(raw)
	if err != nil {
		return nil, err
	}
	if q.pck, err = cache.parsedPCK(q.pckPEM); err != nil {
		return nil, fmt.Errorf("SGX quote: %w", err)
	}
	return q, nil
}

// intelSGXRoot is Intel's SGX Root CA, from the embedded TCB signing chain.
func intelSGXRoot() (*x509.Certificate, error) {
	for rest := intelTCBSigningChain; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("no Intel SGX Root CA embedded")
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err == nil && c.Subject.CommonName == "Intel SGX Root CA" {
			return c, nil
		}
	}
}

// verifyQE checks what SGX and TDX quotes share: the PCK chain to Intel's
// SGX Root CA at now, the Quoting Enclave's report signed by the PCK key,
// the attestation key bound in that report's data (SHA-256 of the key and
// the QE authentication data), and the quote's signature over signed by
// the attestation key.
func verifyQE(cache *chainCache, signed, sig, attKeyXY, qeReport, qeSig, qeAuth []byte, pck []*x509.Certificate, now time.Time) error {
	roots := func() ([]*x509.Certificate, error) {
		root, err := intelSGXRoot()
		return []*x509.Certificate{root}, err
	}
	return verifyQEWith(cache, roots, "Intel's SGX Root CA", signed, sig, attKeyXY, qeReport, qeSig, qeAuth, pck, now)
}

// verifyQEWith is verifyQE with the roots given (the simulated TEE's, for
// its SGX quotes). A chain verified before (cache) is not verified again,
// but each certificate must still be valid at now.
func verifyQEWith(cache *chainCache, rootCerts func() ([]*x509.Certificate, error), rootName string, signed, sig, attKeyXY, qeReport, qeSig, qeAuth []byte, pck []*x509.Certificate, now time.Time) error {
	key := pckKey(rootName, pck)
	if cache.pckVerified(key) {
		for _, c := range pck {
			if now.Before(c.NotBefore) || now.After(c.NotAfter) {
				return fmt.Errorf("the PCK certificate chain is not valid at %s (%q: %s to %s)", now.Format(time.RFC3339), c.Subject.CommonName, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339))
			}
		}
	} else {
		rc, err := rootCerts()
		if err != nil {
			return err
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, r := range rc {
			roots.AddCert(r)
		}
		for _, c := range pck[1:] {
			inter.AddCert(c)
		}
		if _, err := pck[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("the PCK certificate does not chain to %s: %w", rootName, err)
		}
	}
	pckKey, ok := pck[0].PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("the PCK key is a %T, not ECDSA", pck[0].PublicKey)
	}
	if !verifyP256(pckKey, qeReport, qeSig) {
		return errors.New("the Quoting Enclave's report is not signed by the PCK key")
	}
	h := sha256.New()
	h.Write(attKeyXY)
	h.Write(qeAuth)
	qeData := qeReport[320:384]
	if !bytes.Equal(qeData[:32], h.Sum(nil)) || !bytes.Equal(qeData[32:], make([]byte, 32)) {
		return errors.New("the Quoting Enclave's report data does not bind the attestation key")
	}
	attKey, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, attKeyXY...))
	if err != nil {
		return fmt.Errorf("the attestation key: %w", err)
	}
	if !verifyP256(attKey, signed, sig) {
		return errors.New("the quote is not signed by the attestation key")
	}
	cache.putPCK(key, pck[0])
	return nil
}

// parsePEMCerts reads every certificate of a PEM bundle.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

// parsePCKChain reads a PEM PCK certificate chain, leaf first.
func parsePCKChain(chain []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, chain = pem.Decode(chain)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PCK certificate chain: %w", err)
		}
		out = append(out, c)
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("the PCK certificate chain has %d certificates; want the PCK, its CA and the root", len(out))
	}
	return out, nil
}

func verifyP256(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	h := sha256.Sum256(msg)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:64])
	return ecdsa.Verify(pub, h[:], r, s)
}

// VerifySGX verifies an SGX DCAP quote: the PCK chain to Intel's SGX Root
// CA (at o.Now), the QE report's signature by the PCK key, the attestation
// key bound in the QE report data, the quote's signature by that key, and
// DEBUG (refused unless o.AllowDebug). Report data, when o.ReportData is
// set, must match.
func (v *Verifier) VerifySGX(_ context.Context, raw []byte, o Options) (*Claims, error) {
	fail := func(format string, args ...any) (*Claims, error) {
		return nil, fmt.Errorf("%w: SGX quote: "+format, append([]any{ErrVerification}, args...)...)
	}
	q, err := parseSGXQuoteChain(&v.chains, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	kind, platform := tee.SGX, "Intel SGX"
	if o.TrustSim && simIssued(q.pck[len(q.pck)-1].Raw, o.SimRoots) {
		// The simulated TEE's SGX quotes: their claims say sim, and
		// every sim gate applies.
		roots := func() ([]*x509.Certificate, error) { return parsePEMCerts(o.SimRoots) }
		if err := verifyQEWith(&v.chains, roots, "the simulated TEE's root", raw[:sgxSignedSize], q.sig, q.attKey, q.qeReport, q.qeSig, q.qeAuth, q.pck, o.now()); err != nil {
			return fail("%v", err)
		}
		kind, platform = tee.Sim, "simulated SGX (INSECURE, development only)"
	} else if err := verifyQE(&v.chains, raw[:sgxSignedSize], q.sig, q.attKey, q.qeReport, q.qeSig, q.qeAuth, q.pck, o.now()); err != nil {
		return fail("%v", err)
	}
	b, le := q.body, binary.LittleEndian
	flags := le.Uint64(b[48:])
	c := &Claims{
		TEE: kind, Platform: platform,
		Measurement: hex.EncodeToString(b[64:96]),
		ReportData:  hex.EncodeToString(b[320:384]),
		Debug:       flags&sgxAttrDebug != 0,
		SGX: &SGXClaims{
			QuoteVersion: le.Uint16(raw), MRENCLAVE: hex.EncodeToString(b[64:96]), MRSIGNER: hex.EncodeToString(b[128:160]),
			ISVProdID: le.Uint16(b[256:]), ISVSVN: le.Uint16(b[258:]), Attributes: hex.EncodeToString(b[48:64]),
			CPUSVN: hex.EncodeToString(b[:16]), MiscSelect: le.Uint32(b[16:]),
			QESVN: le.Uint16(raw[8:]), PCESVN: le.Uint16(raw[10:]), TCBStatus: "unknown",
		},
	}
	if err := sgxEvaluateTCB(c.SGX, q, o); err != nil {
		return c, fmt.Errorf("%w: SGX quote: %w", ErrVerification, err)
	}
	if c.Debug && !o.AllowDebug {
		return c, fmt.Errorf("%w: SGX quote: the enclave is a DEBUG enclave (ATTRIBUTES.DEBUG set): its memory is readable by the host; allow it only for development (--allow-debug)", ErrVerification)
	}
	if len(o.ReportData) > 0 {
		want := make([]byte, 64)
		copy(want, o.ReportData)
		if !bytes.Equal(b[320:384], want) {
			return c, fmt.Errorf("%w: SGX quote: report_data: found %s, expected %s", ErrVerification, c.ReportData, hex.EncodeToString(want))
		}
	}
	return c, nil
}

// sgxEvaluateTCB sets the TCB status from the collateral directory, when
// one is given.
func sgxEvaluateTCB(c *SGXClaims, q *sgxQuote, o Options) error {
	c.TCBStatus, c.TCBStatusReason = "unknown", "no collateral given (--collateral DIR)"
	ext, err := pcs.PckCertificateExtensions(q.pck[0])
	if err != nil {
		c.TCBStatusReason = "the PCK certificate has no SGX extensions (a simulated quote?)"
		return nil
	}
	c.FMSPC = strings.ToLower(ext.FMSPC)
	if o.TDXCollateralDir == "" {
		return nil
	}
	status, reason, err := sgxTCBStatus(o.TDXCollateralDir, ext, q.qeReport, o.now())
	if err != nil {
		return err
	}
	c.TCBStatus, c.TCBStatusReason = status, reason
	return nil
}
