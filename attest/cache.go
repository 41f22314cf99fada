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
	// products are the product names of VCEK certificates, by the SHA-256
	// of the certificate.
	products map[[32]byte]string
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
	c.store(k, cert)
}

// store records a verified chain by its leaf.
func (c *chainCache) store(k [32]byte, leaf *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) > 4096 {
		c.m = map[[32]byte]chainEntry{}
	}
	c.m[k] = chainEntry{cert: leaf, verified: time.Now()}
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
	if c != nil {
		c.store(k, leaf)
	}
}

// memoized returns m[k], or computes, keeps (at most 4096 entries per map)
// and returns it; a failed computation is not kept.
func memoized[V any](mu *sync.Mutex, m *map[[32]byte]V, k [32]byte, compute func() (V, error)) (V, error) {
	mu.Lock()
	v, ok := (*m)[k]
	mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := compute()
	if err != nil {
		return v, err
	}
	mu.Lock()
	defer mu.Unlock()
	if *m == nil || len(*m) > 4096 {
		*m = map[[32]byte]V{}
	}
	(*m)[k] = v
	return v, nil
}

// parsedPCK parses a PEM PCK chain, or returns it parsed before (a nil
// cache parses every time).
func (c *chainCache) parsedPCK(pemBytes []byte) ([]*x509.Certificate, error) {
	if c == nil {
		return parsePCKChain(pemBytes)
	}
	return memoized(&c.mu, &c.parsed, sha256.Sum256(pemBytes), func() ([]*x509.Certificate, error) { return parsePCKChain(pemBytes) })
}

// fmspc returns the FMSPC of a PCK certificate ("" when it cannot be
// read), parsing each certificate's extensions once.
func (c *chainCache) fmspc(leaf *x509.Certificate) string {
	f, _ := memoized(&c.mu, &c.fmspcs, sha256.Sum256(leaf.Raw), func() (string, error) {
		ext, err := pcs.PckCertificateExtensions(leaf)
		if err != nil {
			return "", err
		}
		return ext.FMSPC, nil
	})
	return f
}

// akPub returns the attestation key the HCL runtime data carries, reading
// each runtime data once.
func (c *chainCache) akPub(h *HCLReport) (*rsa.PublicKey, error) {
	if c == nil {
		return h.akPub()
	}
	return memoized(&c.mu, &c.aks, sha256.Sum256(h.VarData), h.akPub)
}
