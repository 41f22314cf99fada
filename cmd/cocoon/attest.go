package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/guest"
	"cocoon.dev/cocoon/sandbox"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func newAttestCmd(g *globals) *cobra.Command {
	var nonce, asURL string
	cmd := &cobra.Command{
		Use:   "attest POD [--nonce HEX | --as URL]",
		Short: "Get fresh attestation evidence from a running sandbox",
		Long: `Ask the sandbox's agent for fresh evidence from its TEE. The evidence's
REPORT_DATA binds the runtime data, here the nonce (random when not given),
under the host's own label: SHA-512("cocoon/v1/host-challenge", NUL, nonce).
It proves the sandbox is live and what it runs; no key broker or attestation
service accepts it, so it can never be relayed to obtain the pod's secrets.
The JSON evidence envelope is printed; check it with cocoon verify.

With --as URL, cocoon gets a challenge from that attestation service and the
agent binds {"nonce": NONCE} under the service's label; the token it issues
carries no TEE key, so no key broker releases anything to it.`,
		Example: `  cocoon attest hello --nonce $(openssl rand -hex 32) > evidence.json
  cocoon verify --trust-sim evidence.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if asURL != "" {
				return attestWithAS(cmd.Context(), g, args[0], asURL, cmd.OutOrStdout())
			}
			var rd []byte
			if nonce != "" {
				b, err := hex.DecodeString(nonce)
				if err != nil {
					return fmt.Errorf("--nonce must be hex: %w", err)
				}
				rd = b
			} else {
				rd = make([]byte, 32)
				_, _ = rand.Read(rd)
			}
			cl, err := g.Root().Dial(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer cl.Close()
			resp, err := cl.GetEvidence(cmd.Context(), &agentv1.GetEvidenceRequest{RuntimeData: rd})
			if err != nil {
				return fmt.Errorf("evidence from %s: %s", args[0], sandbox.Message(err))
			}
			var v any
			if err := json.Unmarshal(resp.GetEvidence(), &v); err != nil {
				return fmt.Errorf("the agent sent malformed evidence: %w", err)
			}
			return printJSON(cmd.OutOrStdout(), v)
		},
	}
	cmd.Flags().StringVar(&nonce, "nonce", "", "runtime data to bind, as hex (default: 32 random bytes)")
	cmd.Flags().StringVar(&asURL, "as", "", "get a token from this attestation service instead")
	return cmd
}

type verifyFlags struct {
	snpReport, vcek, tdxQuote, collateral string
	azureVTPM, sgxQuote                   string
	offline, allowDebug, trustSim         bool
	at, reference, simRoots, nonce        string
	binding                               string
}

func newVerifyCmd(g *globals) *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify [EVIDENCE.json | --snp-report FILE --vcek FILE | --tdx-quote FILE --collateral DIR | --azure-vtpm FILE --nonce HEX | --sgx-quote FILE]",
		Short: "Verify attestation evidence and print its claims",
		Long: `Verify attestation evidence: the report's signature, the certificate chain to
AMD's or Intel's root (or to the simulated TEE's root with --trust-sim), the
guest policy (debug refused unless --allow-debug), and reference values.
Exits 0 only when verification and every check passed.

Evidence is a JSON envelope (from cocoon attest, or - for standard input; Azure
vTPM evidence and SGX quotes are recognised by their shape), or raw
inputs: an SNP report with its VCEK certificate, or a TDX quote with Intel PCS
collateral saved in a directory (for offline verification), or the evidence of
an Azure confidential VM on SEV-SNP or TDX (--azure-vtpm: the HCL report, the
vTPM's quote over the PCRs, and the VCEK or the TD quote, as Azure's guest
attestation sends it), whose quote must carry --nonce, or an Intel SGX DCAP quote (version 3) with its PCK
certificate chain (--sgx-quote: verified to Intel's SGX Root CA; the TCB status
comes from the TCB info and QE identity in --collateral DIR, "unknown" without).

By default certificates missing from the evidence are fetched from AMD KDS or
Intel PCS (cached under ROOT/cache) and revocation lists are checked; --offline
does neither.`,
		Example: `  cocoon verify --trust-sim evidence.json
  cocoon verify --offline --snp-report report.bin --vcek vcek.der
  cocoon verify --offline --tdx-quote quote.dat --collateral ./collateral --at 2023-07-01T00:00:00Z
  cocoon verify -o json --reference-values refs.yaml evidence.json
  cocoon verify --offline --azure-vtpm azure-evidence.json --nonce 0123abcd
  cocoon verify --sgx-quote quote.dat --at 2024-01-01 --allow-debug
  cocoon verify --sgx-quote quote.dat --collateral pcs/ --at 2024-06-25 --allow-debug`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerify(cmd, g, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.snpReport, "snp-report", "", "raw SEV-SNP report (1184 bytes)")
	fl.StringVar(&f.vcek, "vcek", "", "VCEK certificate (DER or PEM) for --snp-report")
	fl.StringVar(&f.tdxQuote, "tdx-quote", "", "raw TDX quote")
	fl.StringVar(&f.azureVTPM, "azure-vtpm", "", "Azure confidential VM vTPM evidence (JSON): {hcl_report, tpm_quote, vcek} on SEV-SNP, {hcl_report, td_quote, tpm_quote} on TDX")
	fl.StringVar(&f.sgxQuote, "sgx-quote", "", "Intel SGX DCAP quote (version 3) with its PCK certificate chain")
	fl.StringVar(&f.collateral, "collateral", "", "directory of saved Intel PCS responses: TCB info and QE identity (TDX and SGX), pckcrl, rootcrl.der (TDX)")
	fl.BoolVar(&f.offline, "offline", false, "no AMD KDS / Intel PCS fetches and no CRL checks")
	fl.BoolVar(&f.allowDebug, "allow-debug", false, "accept guests whose policy allows debugging")
	fl.StringVar(&f.at, "at", "", "verify as of this time (RFC 3339), for old captured evidence")
	fl.StringVar(&f.reference, "reference-values", "", "reference values file (YAML or JSON; see docs/attestation.md)")
	fl.BoolVar(&f.trustSim, "trust-sim", false, "accept evidence from the simulated TEE (INSECURE, development only)")
	fl.StringVar(&f.simRoots, "sim-roots", "", "the simulated TEE's roots (default: SIM_STATE/roots.pem)")
	fl.StringVar(&f.nonce, "nonce", "", "expected runtime data (hex), e.g. the nonce given to cocoon attest")
	fl.StringVar(&f.binding, "binding", "host-challenge", "the REPORT_DATA binding to accept: host-challenge (cocoon attest) or workload (the in-pod API)")
	return cmd
}

func readCert(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if i := strings.Index(string(b), "-----BEGIN CERTIFICATE-----"); i >= 0 {
		return pemToDER(b[i:])
	}
	return b, nil
}

func loadEvidence(f *verifyFlags, args []string) (*tee.Evidence, error) {
	switch {
	case f.snpReport != "":
		r, err := os.ReadFile(f.snpReport)
		if err != nil {
			return nil, err
		}
		ev := &tee.Evidence{TEE: tee.SNP, Report: r, Certs: map[string][]byte{}}
		if f.vcek != "" {
			c, err := readCert(f.vcek)
			if err != nil {
				return nil, fmt.Errorf("--vcek: %w", err)
			}
			ev.Certs["vcek"] = c
		}
		return ev, nil
	case f.tdxQuote != "":
		q, err := os.ReadFile(f.tdxQuote)
		if err != nil {
			return nil, err
		}
		return &tee.Evidence{TEE: tee.TDX, Report: q}, nil
	case len(args) == 1:
		var b []byte
		var err error
		if args[0] == "-" {
			b, err = io.ReadAll(io.LimitReader(os.Stdin, tee.MaxEvidenceBytes+1))
		} else {
			b, err = os.ReadFile(args[0])
		}
		if err != nil {
			return nil, err
		}
		return tee.ParseEvidence(b)
	}
	return nil, errors.New("give an evidence file, or --snp-report (with --vcek), or --tdx-quote (with --collateral)")
}

func runVerify(cmd *cobra.Command, g *globals, f *verifyFlags, args []string) error {
	var ev *tee.Evidence
	var azure *attest.AzureEvidence
	var sgxQuote []byte
	var err error
	if f.azureVTPM == "" && f.sgxQuote == "" && f.snpReport == "" && f.tdxQuote == "" && len(args) == 1 && args[0] != "-" {
		// An evidence file names its kind by its shape: Azure vTPM JSON,
		// an SGX quote (version 3, TEE type 0), or cocoon's envelope.
		switch kind := sniffEvidence(args[0]); kind {
		case "azure":
			f.azureVTPM = args[0]
		case "sgx":
			f.sgxQuote = args[0]
		case "snp":
			return &exitError{2, fmt.Sprintf("%s looks like a raw SEV-SNP report, not an evidence envelope: verify it with --snp-report %s --vcek VCEK", args[0], args[0])}
		case "tdx":
			return &exitError{2, fmt.Sprintf("%s looks like a raw TDX quote, not an evidence envelope: verify it with --tdx-quote %s", args[0], args[0])}
		}
	}
	switch {
	case f.azureVTPM != "":
		azure, err = loadAzure(f.azureVTPM)
	case f.sgxQuote != "":
		sgxQuote, err = os.ReadFile(f.sgxQuote)
	default:
		ev, err = loadEvidence(f, args)
	}
	if err != nil {
		return &exitError{2, err.Error()}
	}
	o := attest.Options{Offline: f.offline, AllowDebug: f.allowDebug, TDXCollateralDir: f.collateral,
		CacheDir: filepath.Join(g.root, "cache", "attest")}
	if f.at != "" {
		t, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			if t, err = time.Parse("2006-01-02", f.at); err != nil {
				return &exitError{2, fmt.Sprintf("--at %q: want RFC 3339 (2023-07-01T00:00:00Z) or a date", f.at)}
			}
		}
		o.Now = t
	}
	if f.trustSim {
		path := f.simRoots
		if path == "" {
			path = filepath.Join(g.sim(), sim.FileRoots)
		}
		if o.SimRoots, err = os.ReadFile(path); err != nil {
			return &exitError{2, fmt.Sprintf("--trust-sim: the simulated TEE's roots: %v", err)}
		}
		o.TrustSim = true
	}
	if f.reference != "" {
		if o.Reference, err = attest.LoadReferenceValues(f.reference); err != nil {
			return &exitError{2, err.Error()}
		}
	}
	if o.Binding, err = tee.ParseBinding(f.binding); err != nil {
		return &exitError{2, "--binding: " + err.Error()}
	}
	var nonce []byte
	if f.nonce != "" {
		if nonce, err = hex.DecodeString(f.nonce); err != nil {
			return &exitError{2, "--nonce must be hex"}
		}
	}
	if azure != nil && nonce == nil {
		return &exitError{2, "--azure-vtpm needs --nonce: the qualifying data the vTPM quote must carry (without it the quote could be a replay)"}
	}
	if ev != nil && nonce != nil {
		n := nonce
		if string(n) != string(ev.RuntimeData) {
			return &exitError{1, fmt.Sprintf("verification failed: runtime_data: found %x, expected %s (not this nonce's evidence, or a replay)", ev.RuntimeData, f.nonce)}
		}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
	defer cancel()
	var claims *attest.Claims
	var verr error
	switch {
	case azure != nil:
		claims, verr = attest.NewVerifier().VerifyAzure(ctx, azure, nonce, o)
	case sgxQuote != nil:
		o.ReportData = nonce
		claims, verr = attest.NewVerifier().VerifySGX(ctx, sgxQuote, o)
	default:
		claims, verr = attest.Verify(ctx, ev, o)
	}
	if g.json() {
		out := map[string]any{"verified": verr == nil, "claims": claims}
		if verr != nil {
			out["error"] = verr.Error()
		}
		_ = printJSON(cmd.OutOrStdout(), out)
	} else if verr == nil {
		printClaims(cmd.OutOrStdout(), claims)
	}
	if verr != nil {
		if g.json() {
			return &exitError{1, ""}
		}
		return &exitError{1, verr.Error()}
	}
	return nil
}

// sniffEvidence tells Azure vTPM evidence and SGX quotes from cocoon's
// envelope by their first bytes ("" when unsure: the envelope's parser
// then says what is wrong).
func sniffEvidence(path string) string {
	fh, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer fh.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(fh, head)
	head = head[:n]
	if n >= 8 && head[0] == 3 && head[1] == 0 && head[2] == 2 && head[3] == 0 && binary.LittleEndian.Uint32(head[4:]) == 0 {
		return "sgx"
	}
	if t := bytes.TrimSpace(head); len(t) > 0 && t[0] == '{' && bytes.Contains(head, []byte(`"hcl_report"`)) {
		return "azure"
	}
	if n >= 8 && (head[0] == 4 || head[0] == 5) && head[1] == 0 && binary.LittleEndian.Uint32(head[4:]) == 0x81 {
		return "tdx"
	}
	if st, err := fh.Stat(); err == nil && st.Size() == tee.SNPReportSize && n >= 4 {
		if v := binary.LittleEndian.Uint32(head); v >= 2 && v <= 5 {
			return "snp"
		}
	}
	return ""
}

func loadAzure(path string) (*attest.AzureEvidence, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > tee.MaxEvidenceBytes {
		return nil, fmt.Errorf("%s: %d bytes; at most %d are accepted", path, len(b), tee.MaxEvidenceBytes)
	}
	var ev attest.AzureEvidence
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("%s: not Azure vTPM evidence: %w", path, err)
	}
	if len(ev.HCLReport) == 0 || len(ev.TPMQuote.Message) == 0 {
		return nil, fmt.Errorf("%s: Azure vTPM evidence needs hcl_report and tpm_quote", path)
	}
	return &ev, nil
}

func printClaims(w io.Writer, c *attest.Claims) {
	fmt.Fprintf(w, "verified: %s (%s", c.TEE, c.Platform)
	if c.Product != "" {
		fmt.Fprintf(w, ", %s", c.Product)
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "  measurement  %s\n  host_data    %s\n  report_data  %s\n  debug        %v\n", c.Measurement, c.HostData, c.ReportData, c.Debug)
	if s := c.SNP; s != nil {
		fmt.Fprintf(w, "  policy       %s (smt=%v migrate_ma=%v abi>=%s)\n  vmpl         %d\n  reported_tcb %s\n  firmware     %s\n", s.Policy, s.PolicySMT, s.PolicyMigMA, s.PolicyABI, s.VMPL, s.ReportedTCB, s.Firmware)
	}
	if t := c.TDX; t != nil {
		fmt.Fprintf(w, "  mrtd         %s\n  mrconfigid   %s\n  td_attrs     %s\n  tcb_status   %s", t.MRTD, t.MRConfigID, t.TDAttributes, t.TCBStatus)
		if t.TCBStatusReason != "" {
			fmt.Fprintf(w, " (%s)", t.TCBStatusReason)
		}
		fmt.Fprintln(w)
	}
	if s := c.SGX; s != nil {
		fmt.Fprintf(w, "  mrenclave    %s\n  mrsigner     %s\n  isv_prod_id  %d\n  isv_svn      %d\n  attributes   %s\n  tcb_status   %s (%s)\n", s.MRENCLAVE, s.MRSIGNER, s.ISVProdID, s.ISVSVN, s.Attributes, s.TCBStatus, s.TCBStatusReason)
	}
	if a := c.Azure; a != nil {
		idx := make([]int, 0, len(a.PCRs))
		for i := range a.PCRs {
			idx = append(idx, i)
		}
		sort.Ints(idx)
		fmt.Fprintf(w, "  vtpm nonce   %s\n", a.Nonce)
		for _, i := range idx {
			fmt.Fprintf(w, "  pcr%-2d        %s\n", i, a.PCRs[i])
		}
	}
}

func newMeasureCmd(g *globals) *cobra.Command {
	var kind, isolation string
	cmd := &cobra.Command{
		Use:   "measure --tee sim [--isolation process|qemu]",
		Short: "Compute the launch measurement a sandbox will have",
		Long: `Compute the MEASUREMENT the simulated secure processor gives a sandbox, so
relying parties can put it in their reference values:
  --isolation process: the cocoon-agent binary and the isolation;
  --isolation qemu:    also the guest kernel, the initramfs (cocoon guest build)
                       and the kernel command line the VM boots with.`,
		Example: `  cocoon measure --tee sim
  cocoon measure --tee sim --isolation qemu -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kind != "sim" {
				return &exitError{2, fmt.Sprintf("--tee %q: only sim launches can be measured here", kind)}
			}
			agentBin, err := g.agentBinary()
			if err != nil {
				return err
			}
			d, err := guest.FileDigest(agentBin)
			if err != nil {
				return err
			}
			out := map[string]string{"tee": "sim", "agent": agentBin, "agent_digest": d, "isolation": isolation}
			var m [48]byte
			switch isolation {
			case "process":
				m = sandbox.SimMeasurement(d)
			case "qemu":
				img, err := ensureGuest(cmd.Context(), g.Root().GuestDir(), agentBin, d, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				cl := sandbox.VMCmdline("sim")
				m = sandbox.SimVMMeasurement(img, cl)
				out["kernel_digest"], out["initrd_digest"], out["cmdline"] = img.KernelDigest, img.InitrdDigest, cl
			default:
				return &exitError{2, fmt.Sprintf("--isolation %q: want process or qemu", isolation)}
			}
			out["measurement"] = hex.EncodeToString(m[:])
			if g.json() {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(m[:]))
			return nil
		},
	}
	def := os.Getenv("COCOON_ISOLATION")
	if def == "" {
		def = "process"
	}
	cmd.Flags().StringVar(&kind, "tee", "sim", "TEE whose measurement to compute (sim)")
	cmd.Flags().StringVar(&isolation, "isolation", def, "isolation backend of the launch: process or qemu (env COCOON_ISOLATION)")
	return cmd
}
