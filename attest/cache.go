package attest

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"

	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-tdx-guest/pcs"

	"cocoon.dev/cocoon/tee"
)

// chainTTL bounds how long a verified chain is reused before it is checked
// again (including revocation, when online).
const chainTTL = time.Hour

type chainEntry struct {
	cert     *x509.Certificate
	verified time.Time
}

// chainCache remembers endorsement-key certificates whose chain to a trusted
// root verified, keyed by the certificate, the roots and the options that
// shaped the verification.
type chainCache struct {
	mu sync.Mutex
	m  map[[32]byte]chainEntry
	// parsed are PCK certificate chains by the SHA-256 of their PEM.
	parsed map[[32]byte][]*x509.Certificate
	// fmspcs are the FMSPCs of PCK certificates, by the SHA-256 of the
	// certificate.
	fmspcs map[[32]byte]string
	// aks are vTPM attestation keys, by the SHA-256 of the HCL runtime
	// data that carries them.
	aks map[[32]byte]*rsa.PublicKey
}

func chainKey(vcek, vlek []byte, o *Options, kind tee.Kind) [32]byte {
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write(vcek)
	h.Write([]byte{0})
	h.Write(vlek)
	h.Write([]byte{0})
	if kind == tee.Sim {
		h.Write(o.SimRoots)
	}
	if o.Offline {
		h.Write([]byte("offline"))
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

func (c *chainCache) get(k [32]byte, now time.Time) *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || time.Since(e.verified) > chainTTL || now.Before(e.cert.NotBefore) || now.After(e.cert.NotAfter) {
		return nil
	}
	return e.cert
}

func (c *chainCache) put(k [32]byte, chain *spb.CertificateChain) {
	der := chain.GetVcekCert()
	if len(der) == 0 {
		der = chain.GetVlekCert()
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[32]byte]chainEntry{}
	}
	if len(c.m) > 4096 {
		clear(c.m)
	}
	c.m[k] = chainEntry{cert: cert, verified: time.Now()}
}

// pckKey names a verified PCK certificate chain (SGX and TDX quotes) to a
// root.
func pckKey(rootName string, pck []*x509.Certificate) [32]byte {
	h := sha256.New()
	h.Write([]byte("pck\x00" + rootName + "\x00"))
	for _, c := range pck {
		h.Write(c.Raw)
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// pckVerified reports whether the chain was verified within chainTTL; the
// validity of each certificate at now is still checked by the caller.
func (c *chainCache) pckVerified(k [32]byte) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	return ok && time.Since(e.verified) <= chainTTL
}

func (c *chainCache) putPCK(k [32]byte, leaf *x509.Certificate) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[32]byte]chainEntry{}
	}
	if len(c.m) > 4096 {
		clear(c.m)
	}
	c.m[k] = chainEntry{cert: leaf, verified: time.Now()}
}

// parsedPCK parses a PEM PCK chain, or returns it parsed before (a nil
// cache parses every time).
func (c *chainCache) parsedPCK(pemBytes []byte) ([]*x509.Certificate, error) {
	if c == nil {
		return parsePCKChain(pemBytes)
	}
	k := sha256.Sum256(pemBytes)
	c.mu.Lock()
	certs, ok := c.parsed[k]
	c.mu.Unlock()
	if ok {
		return certs, nil
	}
	certs, err := parsePCKChain(pemBytes)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.parsed == nil || len(c.parsed) > 4096 {
		c.parsed = map[[32]byte][]*x509.Certificate{}
	}
	c.parsed[k] = certs
	return certs, nil
}

// fmspc returns the FMSPC of a PCK certificate ("" when it cannot be
// read), parsing each certificate's extensions once.
func (c *chainCache) fmspc(leaf *x509.Certificate) string {
	k := sha256.Sum256(leaf.Raw)
	c.mu.Lock()
	f, ok := c.fmspcs[k]
	c.mu.Unlock()
	if ok {
		return f
	}
	ext, err := pcs.PckCertificateExtensions(leaf)
	if err != nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fmspcs == nil || len(c.fmspcs) > 4096 {
		c.fmspcs = map[[32]byte]string{}
	}
	c.fmspcs[k] = ext.FMSPC
	return ext.FMSPC
}

// akPub returns the attestation key the HCL runtime data carries, reading
// each runtime data once.
func (c *chainCache) akPub(h *HCLReport) (*rsa.PublicKey, error) {
	if c == nil {
		return h.akPub()
	}
	k := sha256.Sum256(h.VarData)
	c.mu.Lock()
	ak, ok := c.aks[k]
	c.mu.Unlock()
	if ok {
		return ak, nil
	}
	ak, err := h.akPub()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aks == nil || len(c.aks) > 4096 {
		c.aks = map[[32]byte]*rsa.PublicKey{}
	}
	c.aks[k] = ak
	return ak, nil
}
