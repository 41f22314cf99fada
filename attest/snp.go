package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"cocoon.dev/cocoon/tee"
)

func tcbOf(v uint64) TCB {
	p := kds.DecomposeTCBVersion(kds.TCBVersion(v))
	return TCB{Bootloader: p.BlSpl, TEE: p.TeeSpl, SNP: p.SnpSpl, Microcode: p.UcodeSpl, Raw: fmt.Sprintf("0x%016x", v)}
}

// ParseSNPReport decodes a raw SNP attestation report (no signature check).
func ParseSNPReport(raw []byte) (*spb.Report, error) {
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("an SNP report is %d bytes, got %d", abi.ReportSize, len(raw))
	}
	r, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parse SNP report: %w", err)
	}
	return r, nil
}

// snpClaims builds claims from a parsed report.
func snpClaims(kind tee.Kind, r *spb.Report, product string) *Claims {
	pol, _ := abi.ParseSnpPolicy(r.GetPolicy())
	info, _ := abi.ParseSignerInfo(r.GetSignerInfo())
	platform := "AMD SEV-SNP"
	if kind == tee.Sim {
		platform = "simulated SEV-SNP (INSECURE, development only)"
	}
	return &Claims{
		TEE: kind, Platform: platform, Product: product,
		Measurement: hex.EncodeToString(r.GetMeasurement()),
		HostData:    hex.EncodeToString(r.GetHostData()),
		ReportData:  hex.EncodeToString(r.GetReportData()),
		Debug:       pol.Debug,
		SNP: &SNPClaims{
			Version: r.GetVersion(), GuestSVN: r.GetGuestSvn(),
			Policy: fmt.Sprintf("0x%x", r.GetPolicy()), PolicyDebug: pol.Debug, PolicySMT: pol.SMT,
			PolicyMigMA: pol.MigrateMA, PolicyABI: fmt.Sprintf("%d.%d", pol.ABIMajor, pol.ABIMinor),
			VMPL: r.GetVmpl(), ChipID: hex.EncodeToString(r.GetChipId()), Signer: info.SigningKey.String(),
			ReportID: hex.EncodeToString(r.GetReportId()), PlatformInfo: fmt.Sprintf("0x%x", r.GetPlatformInfo()),
			ReportedTCB: tcbOf(r.GetReportedTcb()), CurrentTCB: tcbOf(r.GetCurrentTcb()),
			CommittedTCB: tcbOf(r.GetCommittedTcb()), LaunchTCB: tcbOf(r.GetLaunchTcb()),
			Firmware: fmt.Sprintf("%d.%d.%d", r.GetCurrentMajor(), r.GetCurrentMinor(), r.GetCurrentBuild()),
		},
	}
}

// SimRoots parses the sim authority's roots (PEM, ASK then ARK).
func SimRoots(pemBytes []byte) (map[string][]*trust.AMDRootCerts, error) {
	r := trust.AMDRootCertsProduct("Milan")
	if err := r.FromKDSCertBytes(pemBytes); err != nil {
		return nil, fmt.Errorf("sim roots: %w", err)
	}
	return map[string][]*trust.AMDRootCerts{"Milan": {r}}, nil
}

func (v *Verifier) verifySNP(ctx context.Context, ev *tee.Evidence, o *Options) (*Claims, error) {
	r, err := ParseSNPReport(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	att := &spb.Attestation{Report: r, CertificateChain: &spb.CertificateChain{
		VcekCert: ev.Certs["vcek"], VlekCert: ev.Certs["vlek"],
	}}
	vo := &verify.Options{
		Now: o.now(), DisableCertFetching: o.Offline, CheckRevocations: !o.Offline,
		Getter: o.getter(),
	}
	if ev.TEE == tee.Sim {
		if !o.TrustSim || len(o.SimRoots) == 0 {
			return nil, fmt.Errorf("%w: this is evidence from the simulated TEE, which is insecure; it is accepted only by a verifier told to trust that simulator's root (cocoon verify --trust-sim)", ErrVerification)
		}
		vo.DisableCertFetching, vo.CheckRevocations = true, false
	}
	if len(att.CertificateChain.VcekCert) == 0 && len(att.CertificateChain.VlekCert) == 0 && vo.DisableCertFetching {
		return nil, fmt.Errorf("%w: the evidence carries no VCEK certificate and fetching from AMD KDS is off; give the VCEK (--vcek) or allow fetching", ErrVerification)
	}
	key := chainKey(att.CertificateChain.VcekCert, att.CertificateChain.VlekCert, o, ev.TEE)
	if cert := v.chains.get(key, vo.Now); cert != nil {
		// The chain to the root was verified before: only the report's
		// signature is left to check.
		if err := verify.SnpReportSignature(ev.Report, cert); err != nil {
			return nil, fmt.Errorf("%w: SNP report signature: %w", ErrVerification, err)
		}
	} else {
		if ev.TEE == tee.Sim {
			roots, err := SimRoots(o.SimRoots)
			if err != nil {
				return nil, err
			}
			vo.TrustedRoots = roots
		}
		if err := verify.SnpAttestationContext(ctx, att, vo); err != nil {
			return nil, fmt.Errorf("%w: SNP report signature or certificate chain: %w", ErrVerification, err)
		}
		v.chains.put(key, att.CertificateChain)
	}
	product := ""
	if c := att.GetCertificateChain().GetVcekCert(); len(c) > 0 {
		// The certificate was verified above; its product name is parsed
		// once per certificate.
		product, _ = memoized(&v.chains.mu, &v.chains.products, sha256.Sum256(c), func() (string, error) {
			cert, err := trust.ParseCert(c)
			if err != nil {
				return "", err
			}
			ext, err := kds.VcekCertificateExtensions(cert)
			if err != nil {
				return "", err
			}
			return ext.ProductName, nil
		})
	}
	claims := snpClaims(ev.TEE, r, product)
	// The guest policy, TCB and VMPL checks of go-sev-guest's validate,
	// with the debug switch. REPORT_DATA is checked afterwards against the
	// one binding the caller accepts (checkBinding).
	va := &validate.Options{
		GuestPolicy: abi.SnpPolicy{Debug: o.AllowDebug, SMT: true, MigrateMA: true, CXLAllowed: true},
		VMPL:        o.VMPL,
		// Provisional firmware (CURRENT_TCB above COMMITTED_TCB) is common
		// on real hosts; both TCBs are in the claims for appraisal.
		PermitProvisionalFirmware: true,
	}
	if o.MinTCB != nil {
		va.MinimumTCB = *o.MinTCB
		va.MinimumLaunchTCB = *o.MinTCB
	}
	if claims.Debug && !o.AllowDebug {
		return claims, fmt.Errorf("%w: guest policy %s allows debugging (the host can read the guest's memory); refused unless debug is allowed (--allow-debug)", ErrVerification, claims.SNP.Policy)
	}
	if err := validate.SnpAttestation(att, va); err != nil {
		return claims, fmt.Errorf("%w: %w", ErrVerification, explainValidate(err, claims, o))
	}
	return claims, nil
}

// explainValidate adds what was expected and found to validate's errors
// about the TCB.
func explainValidate(err error, c *Claims, o *Options) error {
	if o.MinTCB != nil {
		min := TCB{Bootloader: o.MinTCB.BlSpl, TEE: o.MinTCB.TeeSpl, SNP: o.MinTCB.SnpSpl, Microcode: o.MinTCB.UcodeSpl}
		return fmt.Errorf("%w (reported TCB %s, minimum %s)", err, c.SNP.ReportedTCB, min)
	}
	return err
}
