package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	sevabi "github.com/google/go-sev-guest/abi"
	tdxabi "github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee"
)

// bindPolicy checks that the policy's hash is what this sandbox's hardware
// report carries: HOST_DATA (SNP, sim; SHA-256) or MRCONFIGID (TDX;
// SHA-384). The report comes from the TEE, never from the host's word.
func (a *Agent) bindPolicy(ctx context.Context, text []byte) error {
	att := a.cfg.Attester
	if att == nil {
		return fmt.Errorf("%w: the policy cannot be bound to a hardware report", errNoTEE)
	}
	want := policy.Hash(text, att.Kind())
	if b, ok := att.(initDataBinder); ok {
		// An Azure CVM: HOST_DATA is Azure's, so the policy is bound in
		// the vTPM's init data PCR, which relying parties pin.
		var d [32]byte
		copy(d[:], want)
		pcr, err := b.BindInitData(d)
		if err != nil {
			return fmt.Errorf("bind the policy into the vTPM: %w", err)
		}
		a.log.Info("policy bound to the vTPM's init data PCR", "pcr", 8, "value", hex.EncodeToString(pcr), "hash", hex.EncodeToString(want))
		return nil
	}
	ev, err := att.Evidence(ctx, [64]byte{})
	if err != nil {
		return fmt.Errorf("get a report to bind the policy: %w", err)
	}
	got, field, err := launchData(ev)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the policy's hash %s is not the report's %s %s: the host gave a policy other than the one this sandbox was launched with",
			hex.EncodeToString(want), field, hex.EncodeToString(got))
	}
	a.log.Info("policy bound to the hardware report", "field", field, "hash", hex.EncodeToString(want))
	return nil
}

// initDataBinder is an attester that binds the policy itself (Azure's
// vTPM: PCR 8) rather than finding it in the launch measurement.
type initDataBinder interface {
	BindInitData(digest [32]byte) ([]byte, error)
}

// launchData extracts HOST_DATA (SNP, sim) or MRCONFIGID (TDX).
func launchData(ev *tee.Evidence) ([]byte, string, error) {
	switch ev.TEE {
	case tee.SNP, tee.Sim:
		r, err := sevabi.ReportToProto(ev.Report)
		if err != nil {
			return nil, "", fmt.Errorf("parse own report: %w", err)
		}
		return r.GetHostData(), "HOST_DATA", nil
	case tee.TDX:
		// A version 5 quote (TDX 1.5), which go-tdx-guest does not read:
		// MRCONFIGID is at 184 in the TD report body, after the 48-byte
		// header and the 6-byte body descriptor.
		if r := ev.Report; len(r) >= 54+232 && binary.LittleEndian.Uint16(r) == 5 {
			return append([]byte(nil), r[54+184:54+232]...), "MRCONFIGID", nil
		}
		q, err := tdxabi.QuoteToProto(ev.Report)
		if err != nil {
			return nil, "", fmt.Errorf("parse own quote: %w", err)
		}
		v4, ok := q.(*pb.QuoteV4)
		if !ok {
			return nil, "", fmt.Errorf("parse own quote: unsupported type %T", q)
		}
		return v4.GetTdQuoteBody().GetMrConfigId(), "MRCONFIGID", nil
	}
	return nil, "", fmt.Errorf("unknown TEE %q", ev.TEE)
}

// pulledImages reports what the agent verified for each pulled image.
func (a *Agent) pulledImages() map[string]policy.PulledImage {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]policy.PulledImage, len(a.images))
	for ref, img := range a.images {
		out[ref] = policy.PulledImage{Digest: img.ManifestDigest, ConfigDigest: img.ConfigDigest, Signer: img.Signer}
	}
	return out
}

// pinnedLayerSize is a layer's uncompressed size as the loaded policy pins
// it: a pull stops a layer that grows past it.
func (a *Agent) pinnedLayerSize(diffID string) (int64, bool) {
	e, ok := a.cfg.Enforcer.(*policy.Engine)
	if !ok || e.Loaded() == nil {
		return 0, false
	}
	for _, img := range e.Loaded().Policy.Images {
		for i, d := range img.Layers {
			// A negative size (an encrypted layer's, unknown to the
			// generator) pins nothing.
			if d == diffID && i < len(img.LayerSizes) && img.LayerSizes[i] >= 0 {
				return img.LayerSizes[i], true
			}
		}
	}
	return 0, false
}
