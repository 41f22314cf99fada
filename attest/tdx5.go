package attest

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"cocoon.dev/cocoon/tee"
)

// TDX quotes version 5 (TDX 1.5): a 48-byte header, a body descriptor
// (type 2: a TDX 1.0 TD report body, 584 bytes; type 3: TDX 1.5, 648 bytes,
// adding TEE_TCB_SVN2 and MRSERVICETD), then the signature data whose
// certification data (type 6) wraps the QE report, its signature, the QE
// authentication data and the PCK chain. go-tdx-guest v0.3.1 (the only
// version served) reads version 4 only, so version 5 is read here; the
// checks are those of version 4 and SGX (verifyQE).

const (
	tdx5HeaderSize = 48
	tdxBody10Size  = 584
	tdxBody15Size  = 648
	tdxCertQE      = 6
)

type tdx5Quote struct {
	signed  []byte
	body    []byte
	sig     []byte
	attKey  []byte
	qeRep   []byte
	qeSig   []byte
	qeAuth  []byte
	pckPEM  []byte
	version uint16
}

func parseTDX5(raw []byte) (*tdx5Quote, error) {
	if len(raw) > MaxSGXQuoteBytes {
		return nil, fmt.Errorf("TDX quote: %d bytes; at most %d are accepted", len(raw), MaxSGXQuoteBytes)
	}
	le := binary.LittleEndian
	if len(raw) < tdx5HeaderSize+6 {
		return nil, errors.New("TDX quote: too short")
	}
	if v := le.Uint16(raw); v != 5 {
		return nil, fmt.Errorf("TDX quote: version %d, not 5", v)
	}
	if k := le.Uint16(raw[2:]); k != 2 {
		return nil, fmt.Errorf("TDX quote: attestation key type %d; ECDSA P-256 (2) is read", k)
	}
	if t := le.Uint32(raw[4:]); t != 0x81 {
		return nil, fmt.Errorf("TDX quote: TEE type %#x is not TDX (0x81)", t)
	}
	bodyType, bodySize := le.Uint16(raw[48:]), le.Uint32(raw[50:])
	switch {
	case bodyType == 2 && bodySize == tdxBody10Size, bodyType == 3 && bodySize == tdxBody15Size:
	default:
		return nil, fmt.Errorf("TDX quote: body type %d of %d bytes; a TD report body (type 2, 584 bytes, or 3, 648 bytes) is read", bodyType, bodySize)
	}
	end := tdx5HeaderSize + 6 + int(bodySize)
	if len(raw) < end+4 {
		return nil, errors.New("TDX quote: truncated body")
	}
	q := &tdx5Quote{signed: raw[:end], body: raw[tdx5HeaderSize+6 : end], version: 5}
	sd := raw[end+4:]
	if sl := le.Uint32(raw[end:]); uint64(sl) != uint64(len(sd)) {
		return nil, fmt.Errorf("TDX quote: signature data is %d bytes, the quote says %d", len(sd), sl)
	}
	if len(sd) < 128+6 {
		return nil, errors.New("TDX quote: signature data is too short")
	}
	q.sig, q.attKey = sd[:64], sd[64:128]
	ct, cl := le.Uint16(sd[128:]), le.Uint32(sd[130:])
	cd := sd[134:]
	if ct != tdxCertQE || uint64(cl) != uint64(len(cd)) {
		return nil, fmt.Errorf("TDX quote: certification data type %d of %d bytes; QE report certification data (6) filling the quote is read", ct, cl)
	}
	if len(cd) < sgxBodySize+64+2 {
		return nil, errors.New("TDX quote: QE report certification data is too short")
	}
	q.qeRep, q.qeSig = cd[:sgxBodySize], cd[sgxBodySize:sgxBodySize+64]
	al := int(le.Uint16(cd[448:]))
	rest := cd[450:]
	if al > len(rest) {
		return nil, errors.New("TDX quote: QE authentication data overruns the quote")
	}
	q.qeAuth, rest = rest[:al], rest[al:]
	if len(rest) < 6 {
		return nil, errors.New("TDX quote: no PCK certification data")
	}
	it, il := le.Uint16(rest), le.Uint32(rest[2:])
	rest = rest[6:]
	if it != sgxCertPCK || uint64(il) > uint64(len(rest)) {
		return nil, fmt.Errorf("TDX quote: inner certification data type %d; the PCK chain (5) is read", it)
	}
	q.pckPEM = rest[:il]
	return q, nil
}

// verifyTDX5 verifies a version 5 TDX quote: signatures, QE binding and
// the PCK chain (verifyQE). The TCB status is not evaluated for version 5
// yet (Intel's TCB info for TDX 1.5 is not read here).
func verifyTDX5(raw []byte, o *Options) (*Claims, error) {
	q, err := parseTDX5(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	b := q.body
	attrs := b[120:128]
	c := &Claims{
		TEE: tee.TDX, Platform: "Intel TDX",
		Measurement: hex.EncodeToString(b[136:184]),
		HostData:    hex.EncodeToString(b[184:232]),
		ReportData:  hex.EncodeToString(b[520:584]),
		Debug:       attrs[0]&1 == 1,
		TDX: &TDXClaims{
			QuoteVersion: 5, MRTD: hex.EncodeToString(b[136:184]), MRConfigID: hex.EncodeToString(b[184:232]),
			MROwner: hex.EncodeToString(b[232:280]), MROwnerConfig: hex.EncodeToString(b[280:328]),
			MRSeam: hex.EncodeToString(b[16:64]), TDAttributes: hex.EncodeToString(attrs),
			XFAM: hex.EncodeToString(b[128:136]), TEETCBSVN: hex.EncodeToString(b[:16]),
			TCBStatus: "NotEvaluated", TCBStatusReason: "quote version 5: the TCB level is not evaluated against Intel's collateral yet",
		},
	}
	for i := range 4 {
		c.TDX.RTMR[i] = hex.EncodeToString(b[328+48*i : 376+48*i])
	}
	pck, err := parsePCKChain(q.pckPEM)
	if err != nil {
		return c, fmt.Errorf("%w: TDX quote: %w", ErrVerification, err)
	}
	if err := verifyQE(q.signed, q.sig, q.attKey, q.qeRep, q.qeSig, q.qeAuth, pck, o.now()); err != nil {
		return c, fmt.Errorf("%w: TDX quote: %w", ErrVerification, err)
	}
	return c, nil
}
