package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// Enclave is what a simulated SGX enclave reports about itself.
type Enclave struct {
	MRENCLAVE, MRSIGNER [32]byte
	ISVProdID, ISVSVN   uint16
	// Debug sets ATTRIBUTES.DEBUG.
	Debug bool
}

// SGXQuote signs an SGX ECDSA (DCAP) quote, version 3, for the enclave
// with reportData as its REPORT_DATA, in the exact layout Intel's Quoting
// Enclave writes: the quote signed by a fresh attestation key, that key
// bound by a Quoting Enclave report signed by a fresh PCK key, and the PCK
// certificate — issued by this authority's ASK, labelled INSECURE — with
// the chain in the certification data. Verifiers accept it only when told
// to trust this authority (and then its claims say "tee":"sim").
func (a *Authority) SGXQuote(e Enclave, reportData [64]byte) ([]byte, error) {
	pck, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	att, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Version: 3, SerialNumber: serial, Subject: amdName("SGX PCK Certificate (simulated)", serial),
		NotBefore: now, NotAfter: now.AddDate(1, 0, 0), SignatureAlgorithm: x509.SHA384WithRSAPSS,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	pckDER, err := x509.CreateCertificate(rand.Reader, tmpl, a.Ask, &pck.PublicKey, a.ask)
	if err != nil {
		return nil, fmt.Errorf("sim PCK: %w", err)
	}
	le := binary.LittleEndian
	header := make([]byte, 48)
	le.PutUint16(header[0:], 3) // version
	le.PutUint16(header[2:], 2) // ECDSA P-256
	le.PutUint16(header[8:], 8) // QE SVN
	le.PutUint16(header[10:], 13)
	copy(header[12:28], []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}) // Intel's QE vendor id
	body := make([]byte, 384)
	attrs := uint64(1<<0 | 1<<2) // INIT, MODE64BIT
	if e.Debug {
		attrs |= 1 << 1
	}
	le.PutUint64(body[48:], attrs)
	le.PutUint64(body[56:], 3) // XFRM: x87, SSE
	copy(body[64:96], e.MRENCLAVE[:])
	copy(body[128:160], e.MRSIGNER[:])
	le.PutUint16(body[256:], e.ISVProdID)
	le.PutUint16(body[258:], e.ISVSVN)
	copy(body[320:384], reportData[:])
	signed := append(header, body...)

	point, err := att.PublicKey.Bytes() // 0x04 || x || y
	if err != nil {
		return nil, err
	}
	attXY := point[1:]
	auth := []byte("cocoon simulated QE")
	qeReport := make([]byte, 384)
	le.PutUint16(qeReport[256:], 1) // the QE's ISVPRODID
	h := sha256.New()
	h.Write(attXY)
	h.Write(auth)
	copy(qeReport[320:352], h.Sum(nil))
	qeSig, err := signP256(pck, qeReport)
	if err != nil {
		return nil, err
	}
	quoteSig, err := signP256(att, signed)
	if err != nil {
		return nil, err
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pckDER})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Ask.Raw})...)
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Ark.Raw})...)

	var sd []byte
	sd = append(sd, quoteSig...)
	sd = append(sd, attXY...)
	sd = append(sd, qeReport...)
	sd = append(sd, qeSig...)
	sd = le.AppendUint16(sd, uint16(len(auth)))
	sd = append(sd, auth...)
	sd = le.AppendUint16(sd, 5) // certification data: the PCK chain
	sd = le.AppendUint32(sd, uint32(len(chain)))
	sd = append(sd, chain...)
	out := le.AppendUint32(signed, uint32(len(sd)))
	return append(out, sd...), nil
}

// signP256 signs SHA-256(msg) and returns r || s, 32 bytes each.
func signP256(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}
