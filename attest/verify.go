package attest

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"

	"cocoon.dev/cocoon/tee"
)

// Verifier verifies evidence and caches verified certificate chains, so
// that repeated evidence from one chip costs one signature check. It is safe
// for concurrent use; keep one per service.
type Verifier struct {
	chains chainCache
}

// NewVerifier returns a Verifier with an empty chain cache.
func NewVerifier() *Verifier { return &Verifier{} }

// Verify is NewVerifier().Verify: verification without a cache.
func Verify(ctx context.Context, ev *tee.Evidence, o Options) (*Claims, error) {
	return NewVerifier().Verify(ctx, ev, o)
}

// Verify checks evidence from any TEE: the report's signature and
// certificate chain up to the vendor's root (or the trusted sim root), the
// guest policy, TCB, VMPL and REPORT_DATA from options, and the reference
// values. It returns the claims, also with an error when the evidence is
// authentic but a check failed (the claims then say what was found).
func (v *Verifier) Verify(ctx context.Context, ev *tee.Evidence, o Options) (*Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrVerification)
	}
	var (
		c   *Claims
		err error
	)
	switch ev.TEE {
	case tee.SNP, tee.Sim:
		c, err = v.verifySNP(ctx, ev, &o)
	case tee.TDX:
		c, err = verifyTDX(ctx, &v.chains, ev, &o)
	case tee.SGX:
		c, err = v.VerifySGX(ctx, ev.Report, o)
	case tee.AzureSNP, tee.AzureTDX:
		// The binding is in the TPM quote, not in REPORT_DATA: checked
		// there, with the reference values.
		return v.verifyAzureKind(ctx, ev, &o)
	default:
		return nil, fmt.Errorf("%w: unknown TEE %q", ErrVerification, ev.TEE)
	}
	if err != nil {
		return c, err
	}
	if len(o.ReportData) > 0 {
		want := make([]byte, 64)
		copy(want, o.ReportData)
		got, _ := hex.DecodeString(c.ReportData)
		if !bytes.Equal(got, want) {
			return c, fmt.Errorf("%w: report_data: found %s, expected %s", ErrVerification, c.ReportData, hex.EncodeToString(want))
		}
	}
	if err := checkBinding(c, ev, &o); err != nil {
		return c, err
	}
	if o.Reference != nil {
		if err := o.Reference.Check(c); err != nil {
			return c, fmt.Errorf("%w: %w", ErrVerification, err)
		}
	}
	return c, nil
}

// checkBinding checks REPORT_DATA against the one binding the caller
// accepts: over BoundData when given, else over the envelope's runtime data.
// Evidence bound for another consumer (a host's challenge relayed to a key
// broker, say) is refused with a reason naming what it was made for.
func checkBinding(c *Claims, ev *tee.Evidence, o *Options) error {
	data := o.BoundData
	if data == nil {
		if len(ev.RuntimeData) == 0 {
			return nil
		}
		data = ev.RuntimeData
	}
	if o.Binding == "" {
		return fmt.Errorf("%w: the evidence carries runtime data but the verifier names no binding to check it under", ErrVerification)
	}
	if ev.Binding != "" && ev.Binding != o.Binding {
		return fmt.Errorf("%w: the evidence says it was made for %s; only %s is accepted here", ErrVerification, ev.Binding, o.Binding)
	}
	got, _ := hex.DecodeString(c.ReportData)
	want := o.Binding.ReportData(data)
	if bytes.Equal(got, want[:]) {
		return nil
	}
	if b, ok := tee.Identify(got, data); ok {
		return fmt.Errorf("%w: report_data binds this runtime data for %s, not for %s: evidence made for another consumer is refused", ErrVerification, b, o.Binding)
	}
	if len(ev.RuntimeData) > 0 && o.BoundData != nil {
		if b, ok := tee.Identify(got, ev.RuntimeData); ok {
			return fmt.Errorf("%w: report_data binds the envelope's runtime data for %s, not this request's for %s: evidence made for another consumer is refused", ErrVerification, b, o.Binding)
		}
	}
	return fmt.Errorf("%w: report_data: found %s, expected %s over the runtime data = %s", ErrVerification, c.ReportData, o.Binding, hex.EncodeToString(want[:]))
}
