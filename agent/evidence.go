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

var errNoTEE = errors.New("this sandbox has no TEE attester (no SEV-SNP or TDX device, and no simulated secure processor was given)")

// evidence gets a fresh report binding runtimeData (REPORT_DATA =
// SHA-512(runtimeData)).
func (a *Agent) evidence(ctx context.Context, runtimeData []byte) (*tee.Evidence, error) {
	return a.evidenceFor(ctx, runtimeData, tee.ReportData(runtimeData))
}

// evidenceFor gets a report with an explicit REPORT_DATA.
func (a *Agent) evidenceFor(ctx context.Context, runtimeData []byte, reportData [64]byte) (*tee.Evidence, error) {
	if a.cfg.Attester == nil {
		return nil, fmt.Errorf("%w: %w", errNoTEE, errState)
	}
	if len(runtimeData) > maxRuntimeData {
		return nil, fmt.Errorf("runtime data is %d bytes; at most %d: %w", len(runtimeData), maxRuntimeData, errInvalid)
	}
	ev, err := a.cfg.Attester.Evidence(ctx, reportData)
	if err != nil {
		return nil, fmt.Errorf("get evidence: %w", err)
	}
	ev.RuntimeData = append([]byte{}, runtimeData...)
	return ev, nil
}

func (s *service) GetEvidence(ctx context.Context, req *agentv1.GetEvidenceRequest) (*agentv1.GetEvidenceResponse, error) {
	ev, err := s.a.evidence(ctx, req.GetRuntimeData())
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return &agentv1.GetEvidenceResponse{Evidence: b}, nil
}
