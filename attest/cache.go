package attest

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"

	spb "github.com/google/go-sev-guest/proto/sevsnp"

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
