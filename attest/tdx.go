package attest

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
	tdxtrust "github.com/google/go-tdx-guest/verify/trust"

	"cocoon.dev/cocoon/tee"
)

// intelTCBSigningChain is Intel's public "SGX TCB Signing" certificate and
// root, which Intel PCS sends in the Tcb-Info-Issuer-Chain and
// Sgx-Enclave-Identity-Issuer-Chain headers. A collateral directory may
// hold its own copy as tcb-info-issuer-chain.pem.
//
//go:embed intel-tcb-signing-chain.pem
var intelTCBSigningChain []byte

// ParseTDXQuote decodes a raw TDX quote (no signature check).
func ParseTDXQuote(raw []byte) (*pb.QuoteV4, error) {
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parse TDX quote: %w", err)
	}
	v4, ok := q.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("parse TDX quote: unsupported quote type %T", q)
	}
	return v4, nil
}

// pckChain returns the PCK leaf and the rest of the chain (PEM).
func pckChain(raw []byte) (*x509.Certificate, []byte, error) {
	leaf, rest := pem.Decode(raw)
	if leaf == nil {
		return nil, nil, errors.New("the quote carries no PCK certificate")
	}
	cert, err := x509.ParseCertificate(leaf.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("PCK certificate: %w", err)
	}
	return cert, bytes.TrimRight(rest, "\x00"), nil
}

var tcbStatusRE = regexp.MustCompile(`TCB Status is not "UpToDate", found "([A-Za-z]+)"`)

func verifyTDX(ctx context.Context, cache *chainCache, ev *tee.Evidence, o *Options) (*Claims, error) {
	// Quote signature, QE report signature and binding, PCK chain to
	// Intel's root, as of o.Now — the chain cached (go-tdx-guest, which
	// checks the chain every time, runs below when collateral is
	// evaluated).
	tq, c, err := verifyTDXQuote(cache, ev.Report, o.now())
	if err != nil {
		return c, fmt.Errorf("%w: TDX quote signature or PCK chain: %w", ErrVerification, err)
	}
	if tq.version == 5 {
		c.TDX.TCBStatus, c.TDX.TCBStatusReason = "NotEvaluated", "quote version 5: the TCB level is not evaluated against Intel's collateral yet"
		if c.Debug && !o.AllowDebug {
			return c, fmt.Errorf("%w: TD_ATTRIBUTES %s has DEBUG set (the host can read the TD's memory); refused unless debug is allowed (--allow-debug)", ErrVerification, c.TDX.TDAttributes)
		}
		return c, nil
	}
	// TCB status from Intel collateral: a saved directory, or PCS.
	var getter verify.Options
	switch {
	case o.TDXCollateralDir != "":
		_, rest, err := pckChain(tq.pckPEM)
		if err != nil {
			return c, fmt.Errorf("%w: %w", ErrVerification, err)
		}
		g, err := newCollateralGetter(o.TDXCollateralDir, rest)
		if err != nil {
			return c, err
		}
		if !g.hasFMSPC(c.TDX.FMSPC) {
			c.TDX.TCBStatus = "NotEvaluated"
			c.TDX.TCBStatusReason = fmt.Sprintf("no TCB info for FMSPC %s in %s", c.TDX.FMSPC, o.TDXCollateralDir)
			break
		}
		getter = verify.Options{Getter: g, GetCollateral: true, CheckRevocations: true}
	case o.Offline:
		c.TDX.TCBStatus = "NotEvaluated"
		c.TDX.TCBStatusReason = "offline and no collateral directory given"
	default:
		getter = verify.Options{GetCollateral: true, CheckRevocations: true, Getter: tdxtrust.DefaultHTTPSGetter()}
	}
	if getter.GetCollateral {
		q, err := ParseTDXQuote(ev.Report)
		if err != nil {
			return c, fmt.Errorf("%w: %w", ErrVerification, err)
		}
		getter.Now = o.now()
		err = verify.TdxQuote(q, &getter)
		switch m := tcbStatusRE.FindStringSubmatch(fmt.Sprint(err)); {
		case err == nil:
			c.TDX.TCBStatus = "UpToDate"
		case m != nil:
			c.TDX.TCBStatus, c.TDX.TCBStatusReason = m[1], err.Error()
		case strings.Contains(err.Error(), "no matching TCB level found"):
			// Intel's term when no TCB level of the collateral matches the
			// platform's SVNs.
			c.TDX.TCBStatus, c.TDX.TCBStatusReason = "Unrecognized", "no TCB level in the collateral for FMSPC "+c.TDX.FMSPC+" matches this platform's SVNs"
		default:
			return c, fmt.Errorf("%w: TDX collateral: %w", ErrVerification, err)
		}
	}
	if c.Debug && !o.AllowDebug {
		return c, fmt.Errorf("%w: TD_ATTRIBUTES %s has DEBUG set (the host can read the TD's memory); refused unless debug is allowed (--allow-debug)", ErrVerification, c.TDX.TDAttributes)
	}
	return c, nil
}

// collateralGetter serves Intel PCS URLs from files saved in a directory,
// for offline verification. Files are recognized by content: TCB info and
// QE identity JSON (any name), "pckcrl" and "rootcrl.der".
type collateralGetter struct {
	dir         string
	tcbInfo     map[string][]byte // fmspc -> body
	qeIdentity  []byte
	signChain   string // URL-encoded PEM, as in PCS headers
	pckCrlChain string
}

func newCollateralGetter(dir string, pckIssuerChain []byte) (*collateralGetter, error) {
	g := &collateralGetter{dir: dir, tcbInfo: map[string][]byte{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("TDX collateral: %w", err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || len(b) == 0 || b[0] != '{' {
			continue
		}
		var head struct {
			TcbInfo *struct {
				Fmspc string `json:"fmspc"`
			} `json:"tcbInfo"`
			EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
		}
		if json.Unmarshal(b, &head) != nil {
			continue
		}
		switch {
		case head.TcbInfo != nil:
			g.tcbInfo[strings.ToLower(head.TcbInfo.Fmspc)] = b
		case head.EnclaveIdentity != nil:
			g.qeIdentity = b
		}
	}
	chain := intelTCBSigningChain
	if b, err := os.ReadFile(filepath.Join(dir, "tcb-info-issuer-chain.pem")); err == nil {
		chain = b
	}
	g.signChain = url.QueryEscape(string(chain))
	g.pckCrlChain = url.QueryEscape(string(pckIssuerChain))
	return g, nil
}

func (g *collateralGetter) hasFMSPC(fmspc string) bool {
	_, ok := g.tcbInfo[strings.ToLower(fmspc)]
	return ok && g.qeIdentity != nil
}

// Get implements go-tdx-guest's trust.HTTPSGetter.
func (g *collateralGetter) Get(u string) (map[string][]string, []byte, error) {
	file := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(g.dir, name))
		if err != nil {
			return nil, fmt.Errorf("TDX collateral: %s is needed for offline verification: %w", name, err)
		}
		return b, nil
	}
	switch {
	case strings.Contains(u, "/tcb?fmspc="):
		f := strings.ToLower(u[strings.LastIndex(u, "=")+1:])
		b, ok := g.tcbInfo[f]
		if !ok {
			return nil, nil, fmt.Errorf("TDX collateral: no TCB info for FMSPC %s in %s", f, g.dir)
		}
		return map[string][]string{"Tcb-Info-Issuer-Chain": {g.signChain}}, b, nil
	case strings.HasSuffix(u, "/qe/identity"):
		return map[string][]string{"Sgx-Enclave-Identity-Issuer-Chain": {g.signChain}}, g.qeIdentity, nil
	case strings.Contains(u, "/pckcrl?"):
		b, err := file("pckcrl")
		return map[string][]string{"Sgx-Pck-Crl-Issuer-Chain": {g.pckCrlChain}}, b, err
	case strings.HasSuffix(u, ".der") || strings.Contains(u, "crl"):
		b, err := file("rootcrl.der")
		return nil, b, err
	}
	return nil, nil, fmt.Errorf("TDX collateral: no saved response for %s", u)
}
