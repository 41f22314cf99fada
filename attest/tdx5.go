package attest

import (
	"time"

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

// parseTDX5 splits a TDX quote, version 4 or 5, into its signed part and
// its signature data (the name is the version it was written for; version
// 4 is read the same way so that both verify through verifyQE).
func parseTDX5(raw []byte) (*tdx5Quote, error) {
	if len(raw) > MaxSGXQuoteBytes {
		return nil, fmt.Errorf("TDX quote: %d bytes; at most %d are accepted", len(raw), MaxSGXQuoteBytes)
	}
	le := binary.LittleEndian
	if len(raw) < tdx5HeaderSize+6 {
		return nil, errors.New("TDX quote: too short")
	}
	version := le.Uint16(raw)
	if version != 4 && version != 5 {
		return nil, fmt.Errorf("TDX quote: version %d; versions 4 and 5 are read", version)
	}
	if k := le.Uint16(raw[2:]); k != 2 {
		return nil, fmt.Errorf("TDX quote: attestation key type %d; ECDSA P-256 (2) is read", k)
	}
	if t := le.Uint32(raw[4:]); t != 0x81 {
		return nil, fmt.Errorf("TDX quote: TEE type %#x is not TDX (0x81)", t)
	}
	// Version 4: the TD report body follows the header. Version 5: a
	// descriptor (type, size) comes first.
	start, bodySize := tdx5HeaderSize, uint32(tdxBody10Size)
	if version == 5 {
		bodyType := le.Uint16(raw[48:])
		bodySize = le.Uint32(raw[50:])
		switch {
		case bodyType == 2 && bodySize == tdxBody10Size, bodyType == 3 && bodySize == tdxBody15Size:
		default:
			return nil, fmt.Errorf("TDX quote: body type %d of %d bytes; a TD report body (type 2, 584 bytes, or 3, 648 bytes) is read", bodyType, bodySize)
		}
		start += 6
	}
	end := start + int(bodySize)
	if len(raw) < end+4 {
		return nil, errors.New("TDX quote: truncated body")
	}
	q := &tdx5Quote{signed: raw[:end], body: raw[start:end], version: version}
	sd := raw[end+4:]
	sl := le.Uint32(raw[end:])
	if uint64(sl) < uint64(len(sd)) {
		// Bytes after the signature data (quote buffers come padded from
		// the quote service) are neither signed nor read; go-tdx-guest
		// ignores them too.
		sd = sd[:sl]
	}
	if uint64(sl) != uint64(len(sd)) {
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

// tdxBodyClaims are the claims of a TD report body (TDX 1.0 layout; the
// TDX 1.5 body only appends TEE_TCB_SVN2 and MRSERVICETD).
func tdxBodyClaims(version uint16, b []byte) *Claims {
	attrs := b[120:128]
	c := &Claims{
		TEE: tee.TDX, Platform: "Intel TDX",
		Measurement: hex.EncodeToString(b[136:184]),
		HostData:    hex.EncodeToString(b[184:232]),
		ReportData:  hex.EncodeToString(b[520:584]),
		// TD_ATTRIBUTES bit 0 is DEBUG.
		Debug: attrs[0]&1 == 1,
		TDX: &TDXClaims{
			QuoteVersion: uint32(version), MRTD: hex.EncodeToString(b[136:184]), MRConfigID: hex.EncodeToString(b[184:232]),
			MROwner: hex.EncodeToString(b[232:280]), MROwnerConfig: hex.EncodeToString(b[280:328]),
			MRSeam: hex.EncodeToString(b[16:64]), TDAttributes: hex.EncodeToString(attrs),
			XFAM: hex.EncodeToString(b[128:136]), TEETCBSVN: hex.EncodeToString(b[:16]),
		},
	}
	for i := range 4 {
		c.TDX.RTMR[i] = hex.EncodeToString(b[328+48*i : 376+48*i])
	}
	return c
}

// verifyTDXQuote parses a TDX quote (version 4 or 5), checks its
// signatures, QE binding and PCK chain (verifyQE, the chain cached) and
// returns its claims with the FMSPC.
func verifyTDXQuote(cache *chainCache, raw []byte, now time.Time) (*tdx5Quote, *Claims, error) {
	q, err := parseTDX5(raw)
	if err != nil {
		return nil, nil, err
	}
	c := tdxBodyClaims(q.version, q.body)
	pck, err := cache.parsedPCK(q.pckPEM)
	if err != nil {
		return q, c, fmt.Errorf("TDX quote: %w", err)
	}
	if err := verifyQE(cache, q.signed, q.sig, q.attKey, q.qeRep, q.qeSig, q.qeAuth, pck, now); err != nil {
		return q, c, fmt.Errorf("TDX quote: %w", err)
	}
	c.TDX.FMSPC = cache.fmspc(pck[0])
	return q, c, nil
}
