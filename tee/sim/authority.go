// Package sim is cocoon's simulated secure processor, for development and
// tests on machines without a TEE. It signs reports in the real AMD SEV-SNP
// report format with a locally generated ARK -> ASK -> VCEK chain, so that
// the whole SNP verification path (including go-sev-guest's) runs on them.
//
// It is INSECURE by construction: whoever holds the state directory can sign
// anything. Verifiers accept sim evidence only when told to trust this
// authority's root, and every claim from it says "tee":"sim".
//
// Like the PSP, it runs outside the sandbox: the host runtime registers each
// launch (its MEASUREMENT and HOST_DATA) and the agent can only ask for
// reports of its own launch, choosing nothing but REPORT_DATA.
package sim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// ProductLine is the AMD product line the simulated chain claims.
const ProductLine = "Milan"

// ProductName is the product name written into the simulated VCEK.
const ProductName = "Milan-B0"

// TCB is the TCB version the simulated processor reports.
var TCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 22, UcodeSpl: 213}

// insecureLabel marks every certificate of the chain (X.520 description).
const insecureLabel = "cocoon simulated secure processor - INSECURE, for development only"

var oidDescription = asn1.ObjectIdentifier{2, 5, 4, 13}

// Authority is a simulated secure processor: its keys and certificates.
type Authority struct {
	ark, ask       *rsa.PrivateKey
	vcek           *ecdsa.PrivateKey
	Ark, Ask, Vcek *x509.Certificate
	ChipID         [abi.ChipIDSize]byte
}

const (
	fileKeys  = "keys.pem"
	fileChain = "chain.pem"
	// FileRoots holds what verifiers must trust: ASK then ARK (PEM).
	FileRoots = "roots.pem"
)

// LoadOrCreate opens the authority persisted in dir, creating its keys and
// certificates on first use (keys are written 0600).
func LoadOrCreate(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sim authority: %w", err)
	}
	a, err := load(dir)
	if err == nil {
		return a, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	a, err = create()
	if err != nil {
		return nil, err
	}
	if err := a.save(dir); err != nil {
		return nil, err
	}
	// Another process may have created it at the same time: use what is on
	// disk so every launcher signs with one chain.
	return load(dir)
}

func amdName(cn string, serial *big.Int) pkix.Name {
	return pkix.Name{
		Country: []string{"US"}, Locality: []string{"Santa Clara"}, Province: []string{"CA"},
		Organization: []string{"Advanced Micro Devices"}, OrganizationalUnit: []string{"Engineering"},
		CommonName: cn, SerialNumber: fmt.Sprintf("%x", serial),
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidDescription, Value: insecureLabel}},
	}
}

func create() (*Authority, error) {
	a := &Authority{}
	var err error
	// RSA-2048 rather than AMD's 4096 keeps first use fast; the chain is a
	// simulation whose trust comes only from being configured explicitly.
	if a.ark, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if a.ask, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if a.vcek, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		return nil, err
	}
	if _, err := rand.Read(a.ChipID[:]); err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	crl := kds.CrlLinkByKey(ProductLine, abi.VcekReportSigner)
	arkSerial, askSerial := big.NewInt(now.Unix()), big.NewInt(now.Unix()+1)
	arkT := &x509.Certificate{
		Version: 3, SerialNumber: arkSerial, Subject: amdName("ARK-"+ProductLine, arkSerial),
		NotBefore: now, NotAfter: now.AddDate(25, 0, 0), SignatureAlgorithm: x509.SHA384WithRSAPSS,
		IsCA: true, BasicConstraintsValid: true, CRLDistributionPoints: []string{crl},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	arkT.Issuer = arkT.Subject
	arkDER, err := x509.CreateCertificate(rand.Reader, arkT, arkT, &a.ark.PublicKey, a.ark)
	if err != nil {
		return nil, fmt.Errorf("sim ARK: %w", err)
	}
	if a.Ark, err = x509.ParseCertificate(arkDER); err != nil {
		return nil, err
	}
	askT := &x509.Certificate{
		Version: 3, SerialNumber: askSerial, Subject: amdName("SEV-"+ProductLine, askSerial),
		NotBefore: now, NotAfter: now.AddDate(25, 0, 0), SignatureAlgorithm: x509.SHA384WithRSAPSS,
		IsCA: true, BasicConstraintsValid: true, CRLDistributionPoints: []string{crl},
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	askDER, err := x509.CreateCertificate(rand.Reader, askT, a.Ark, &a.ask.PublicKey, a.ark)
	if err != nil {
		return nil, fmt.Errorf("sim ASK: %w", err)
	}
	if a.Ask, err = x509.ParseCertificate(askDER); err != nil {
		return nil, err
	}
	exts, err := vcekExtensions(a.ChipID[:])
	if err != nil {
		return nil, err
	}
	vcekT := &x509.Certificate{
		Version: 3, SerialNumber: big.NewInt(0), Subject: amdName("SEV-VCEK", big.NewInt(0)),
		NotBefore: now, NotAfter: now.AddDate(7, 0, 0), SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions: exts,
	}
	vcekDER, err := x509.CreateCertificate(rand.Reader, vcekT, a.Ask, &a.vcek.PublicKey, a.ask)
	if err != nil {
		return nil, fmt.Errorf("sim VCEK: %w", err)
	}
	if a.Vcek, err = x509.ParseCertificate(vcekDER); err != nil {
		return nil, err
	}
	return a, nil
}

// vcekExtensions are AMD's KDS extensions: struct version, product name,
// TCB components and the chip id.
func vcekExtensions(chipID []byte) ([]pkix.Extension, error) {
	u8 := func(v uint8) []byte { b, _ := asn1.Marshal(int(v)); return b }
	zero, _ := asn1.Marshal(0)
	name, err := asn1.MarshalWithParams(ProductName, "ia5")
	if err != nil {
		return nil, err
	}
	hwid, err := asn1.Marshal(chipID)
	if err != nil {
		return nil, err
	}
	return []pkix.Extension{
		{Id: kds.OidStructVersion, Value: zero},
		{Id: kds.OidProductName1, Value: name},
		{Id: kds.OidBlSpl, Value: u8(TCB.BlSpl)},
		{Id: kds.OidTeeSpl, Value: u8(TCB.TeeSpl)},
		{Id: kds.OidSnpSpl, Value: u8(TCB.SnpSpl)},
		{Id: kds.OidSpl4, Value: zero}, {Id: kds.OidSpl5, Value: zero},
		{Id: kds.OidSpl6, Value: zero}, {Id: kds.OidSpl7, Value: zero},
		{Id: kds.OidUcodeSpl, Value: u8(TCB.UcodeSpl)},
		{Id: kds.OidHwid, Value: hwid},
	}, nil
}

func (a *Authority) save(dir string) error {
	arkK, _ := x509.MarshalPKCS8PrivateKey(a.ark)
	askK, _ := x509.MarshalPKCS8PrivateKey(a.ask)
	vcekK, err := x509.MarshalPKCS8PrivateKey(a.vcek)
	if err != nil {
		return err
	}
	var keys, chain []byte
	for _, k := range [][]byte{arkK, askK, vcekK} {
		keys = append(keys, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})...)
	}
	for _, c := range []*x509.Certificate{a.Ark, a.Ask, a.Vcek} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	clear(arkK)
	clear(askK)
	clear(vcekK)
	// Write both files under temporary names, then link them in place only
	// if nobody else did: the first creator wins.
	tmp, err := os.MkdirTemp(dir, ".new")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, fileKeys), keys, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, fileChain), chain, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, FileRoots), a.RootsPEM(), 0o644); err != nil {
		return err
	}
	if err := os.Link(filepath.Join(tmp, fileChain), filepath.Join(dir, fileChain)); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	if err := os.Rename(filepath.Join(tmp, FileRoots), filepath.Join(dir, FileRoots)); err != nil {
		return err
	}
	return os.Rename(filepath.Join(tmp, fileKeys), filepath.Join(dir, fileKeys))
}

func load(dir string) (*Authority, error) {
	chain, err := os.ReadFile(filepath.Join(dir, fileChain))
	if err != nil {
		return nil, err
	}
	var keysPEM []byte
	for i := 0; i < 100; i++ { // the creator links the chain first, then the keys
		if keysPEM, err = os.ReadFile(filepath.Join(dir, fileKeys)); err == nil || !errors.Is(err, os.ErrNotExist) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("sim authority keys: %w", err)
	}
	defer clear(keysPEM)
	a := &Authority{}
	var certs []*x509.Certificate
	for rest := chain; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("sim authority chain: %w", err)
		}
		certs = append(certs, c)
	}
	var keys []any
	for rest := keysPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("sim authority keys: %w", err)
		}
		keys = append(keys, k)
	}
	if len(certs) != 3 || len(keys) != 3 {
		return nil, fmt.Errorf("sim authority in %s is incomplete (%d certificates, %d keys); remove the directory to start over", dir, len(certs), len(keys))
	}
	a.Ark, a.Ask, a.Vcek = certs[0], certs[1], certs[2]
	var ok1, ok2, ok3 bool
	a.ark, ok1 = keys[0].(*rsa.PrivateKey)
	a.ask, ok2 = keys[1].(*rsa.PrivateKey)
	a.vcek, ok3 = keys[2].(*ecdsa.PrivateKey)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("sim authority in %s has keys of the wrong type", dir)
	}
	ext, err := kds.VcekCertificateExtensions(a.Vcek)
	if err != nil {
		return nil, fmt.Errorf("sim VCEK: %w", err)
	}
	copy(a.ChipID[:], ext.HWID)
	return a, nil
}

// RootsPEM returns the ASK and ARK certificates, ASK first, as AMD's KDS
// serves its cert_chain: what a verifier must be told to trust.
func (a *Authority) RootsPEM() []byte {
	var out []byte
	for _, c := range []*x509.Certificate{a.Ask, a.Ark} {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Launch is what the launcher registers for one sandbox.
type Launch struct {
	Measurement [48]byte
	HostData    [32]byte
	// Policy is the SNP guest policy reported (default: SMT allowed, no debug).
	Policy uint64
	// ReportID identifies the launch.
	ReportID [32]byte
}

// DefaultPolicy is the guest policy of simulated launches: ABI 0.0, SMT
// allowed, reserved bit 17 set, no debug, no migration agent.
const DefaultPolicy uint64 = 1<<16 | 1<<17

// Report signs a version-2 SNP attestation report for the launch, with
// reportData as REPORT_DATA.
func (a *Authority) Report(l Launch, reportData [64]byte) ([]byte, error) {
	tcb, err := kds.ComposeTCBParts(TCB)
	if err != nil {
		return nil, err
	}
	policy := l.Policy
	if policy == 0 {
		policy = DefaultPolicy
	}
	ma := make([]byte, 32)
	for i := range ma {
		ma[i] = 0xff
	}
	r := &spb.Report{
		Version: 2, Policy: policy, FamilyId: make([]byte, 16), ImageId: make([]byte, 16),
		SignatureAlgo: 1, CurrentTcb: uint64(tcb), PlatformInfo: 1,
		ReportData: reportData[:], Measurement: l.Measurement[:], HostData: l.HostData[:],
		IdKeyDigest: make([]byte, 48), AuthorKeyDigest: make([]byte, 48),
		ReportId: l.ReportID[:], ReportIdMa: ma, ReportedTcb: uint64(tcb), ChipId: a.ChipID[:],
		CommittedTcb: uint64(tcb), CurrentBuild: 21, CurrentMinor: 55, CurrentMajor: 1,
		CommittedBuild: 21, CommittedMinor: 55, CommittedMajor: 1, LaunchTcb: uint64(tcb),
		Signature: make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(r)
	if err != nil {
		return nil, fmt.Errorf("sim report: %w", err)
	}
	digest := sha512.Sum384(abi.SignedComponent(raw))
	R, S, err := ecdsa.Sign(rand.Reader, a.vcek, digest[:])
	if err != nil {
		return nil, err
	}
	if err := abi.SetSignature(R, S, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// LaunchConfig is what the simulated processor measures at launch.
type LaunchConfig struct {
	Isolation string `json:"isolation"`
	// AgentDigest is sha256:<hex> of the cocoon-agent binary.
	AgentDigest string `json:"agent_digest"`
	// KernelDigest, InitrdDigest (sha256:<hex>) and Cmdline are what a VM
	// launch ("qemu" isolation) boots: the processor measures them as
	// SEV-SNP does with kernel hashes on. Empty for process launches.
	KernelDigest string `json:"kernel_digest,omitempty"`
	InitrdDigest string `json:"initrd_digest,omitempty"`
	Cmdline      string `json:"cmdline,omitempty"`
}

// Measure is the launch MEASUREMENT: SHA-384 over a domain label, the agent
// binary's digest and the isolation, each length-prefixed, and for a VM
// launch also the kernel's and initramfs's digests and the command line.
func Measure(c LaunchConfig) [48]byte {
	h := sha512.New384()
	parts := []string{"cocoon-sim-launch-v1", c.AgentDigest, c.Isolation}
	if c.KernelDigest != "" || c.InitrdDigest != "" || c.Cmdline != "" {
		parts = append(parts, "vm", c.KernelDigest, c.InitrdDigest, c.Cmdline)
	}
	for _, part := range parts {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(part)>>24), byte(len(part)>>16), byte(len(part)>>8), byte(len(part))
		h.Write(n[:])
		h.Write([]byte(part))
	}
	var m [48]byte
	copy(m[:], h.Sum(nil))
	return m
}

var _ crypto.Signer = (*ecdsa.PrivateKey)(nil)
