package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/tee"
)

// maxRuntimeData bounds what a caller may bind into a report.
const maxRuntimeData = 1024

// maxASNonce bounds an attestation service nonce a host may have bound.
const maxASNonce = 256

var errNoTEE = errors.New("this sandbox has no TEE attester (no SEV-SNP or TDX device, and no simulated secure processor was given)")

// evidence gets a fresh report whose REPORT_DATA binds runtimeData under b.
// Every path to the TEE goes through here (or through the agent's own KBS
// client), so which binding a caller gets is decided in one place per
// caller: the host's requests, the in-pod API's routes.
func (a *Agent) evidence(ctx context.Context, b tee.Binding, runtimeData []byte) (*tee.Evidence, error) {
	if len(runtimeData) > maxRuntimeData {
		return nil, fmt.Errorf("runtime data is %d bytes; at most %d: %w", len(runtimeData), maxRuntimeData, errInvalid)
	}
	ev, err := a.evidenceFor(ctx, b.ReportData(runtimeData))
	if err != nil {
		return nil, err
	}
	ev.RuntimeData = append([]byte{}, runtimeData...)
	ev.Binding = b
	return ev, nil
}

// evidenceFor gets a report with an explicit REPORT_DATA.
func (a *Agent) evidenceFor(ctx context.Context, reportData [64]byte) (*tee.Evidence, error) {
	if a.cfg.Attester == nil {
		return nil, fmt.Errorf("%w: %w", errNoTEE, errState)
	}
	ev, err := a.cfg.Attester.Evidence(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("get evidence: %w", err)
	}
	return ev, nil
}

// hostEvidence serves a host's evidence request. The host chooses the runtime
// data, so it is bound under the host's own label; or, for an attestation
// service's challenge, the agent wraps the nonce itself ({"nonce": ...}), so
// the host can never have a key of its choosing bound for a consumer that
// releases anything to keys.
func (a *Agent) hostEvidence(ctx context.Context, req *agentv1.GetEvidenceRequest) (*tee.Evidence, error) {
	switch req.GetBinding() {
	case agentv1.EvidenceBinding_HOST_CHALLENGE:
		return a.evidence(ctx, tee.BindHostChallenge, req.GetRuntimeData())
	case agentv1.EvidenceBinding_ATTESTATION_SERVICE_NONCE:
		n := req.GetRuntimeData()
		if err := checkASNonce(n); err != nil {
			return nil, err
		}
		data, err := tee.CanonicalJSON(map[string]any{"nonce": string(n)})
		if err != nil {
			return nil, err
		}
		return a.evidence(ctx, tee.BindAttestationService, data)
	}
	return nil, fmt.Errorf("binding %d is not one this agent knows: %w", req.GetBinding(), errInvalid)
}

// checkASNonce accepts what attestation services issue as nonces: 1 to 256
// printable ASCII characters.
func checkASNonce(n []byte) error {
	if len(n) == 0 || len(n) > maxASNonce {
		return fmt.Errorf("an attestation service nonce is 1 to %d bytes, not %d: %w", maxASNonce, len(n), errInvalid)
	}
	for _, c := range n {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("an attestation service nonce is printable ASCII; byte 0x%02x is not: %w", c, errInvalid)
		}
	}
	return nil
}

func (s *service) GetEvidence(ctx context.Context, req *agentv1.GetEvidenceRequest) (*agentv1.GetEvidenceResponse, error) {
	ev, err := s.a.hostEvidence(ctx, req)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return &agentv1.GetEvidenceResponse{Evidence: b}, nil
}
