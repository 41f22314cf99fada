package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/testsim"
	"cocoon.dev/cocoon/internal/testtpm"
	"cocoon.dev/cocoon/tee/azvtpm"
	"cocoon.dev/cocoon/tee/sim"
)

// TestAzurePolicyBinding: on an Azure CVM's vTPM (swtpm behind the
// simulated paravisor) the first policy is measured into PCR 8, the value
// relying parties pin; the agent then serves under it; a restarted agent
// given another policy is refused, naming PCR 8, and nothing is served.
func TestAzurePolicyBinding(t *testing.T) {
	launched, other := testPolicy(t, "p"), testPolicy(t, "q")
	pv, err := testsim.Authority(t).NewParavisor(testtpm.Start(t), sim.Launch{})
	if err != nil {
		t.Fatal(err)
	}
	att := azvtpm.NewSNP(pv, func(context.Context) ([]byte, error) { return pv.VCEK(), nil })
	ctx := context.Background()
	_, cl := startAgentWith(t, func(c *Config) { c.Attester = att })
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p", Policy: launched}); err != nil {
		t.Fatalf("the first policy: %v", err)
	}
	pcrs, err := azvtpm.ReadPCRs(pv)
	if err != nil {
		t.Fatal(err)
	}
	want := azvtpm.InitDataPCRValue(sha256.Sum256(launched))
	if hex.EncodeToString(pcrs[azvtpm.InitDataPCR]) != hex.EncodeToString(want) {
		t.Fatalf("PCR 8 = %x, want %x", pcrs[8], want)
	}
	// Another agent on the same VM (a restart) given another policy.
	_, cl2 := startAgentWith(t, func(c *Config) { c.Attester = att })
	_, err = cl2.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "q", Policy: other})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "PCR 8") {
		t.Fatalf("another policy: %v", err)
	}
	if _, err := cl2.ListContainers(ctx, &agentv1.ListContainersRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("after a refused policy: %v", err)
	}
	// The same policy again binds.
	_, cl3 := startAgentWith(t, func(c *Config) { c.Attester = att })
	if _, err := cl3.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p", Policy: launched}); err != nil {
		t.Fatalf("the same policy after a restart: %v", err)
	}
}
