package agent

import (
	"context"
	"fmt"
	"net/http"

	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/policy"
)

// kbsConfig is the key broker the loaded policy names.
func (a *Agent) kbsConfig() (*policy.KBS, error) {
	e, ok := a.cfg.Enforcer.(*policy.Engine)
	if !ok || e.Loaded() == nil {
		return nil, fmt.Errorf("no policy is loaded, so no key broker is known: %w", errState)
	}
	if e.Loaded().Policy.AllowAll {
		return nil, fmt.Errorf("the sandbox runs an allow-all policy, under which the host decides what runs: the agent fetches no secret for it: %w", errState)
	}
	k := e.Loaded().Policy.KBS
	if k == nil {
		return nil, fmt.Errorf("the pod's policy names no key broker (annotation cocoon.dev/kbs): %w", errState)
	}
	return k, nil
}

// kbsClient is a KBS protocol client to the policy's broker: the requests
// go through the host's egress channel and TLS is checked against the CA the
// policy pins.
func (a *Agent) kbsClient() (*client.Client, error) {
	k, err := a.kbsConfig()
	if err != nil {
		return nil, err
	}
	var ca []byte
	if k.CA != "" {
		ca = []byte(k.CA)
	}
	tr, _ := a.cfg.Transport.(*http.Transport)
	hc, err := client.HTTPClient(ca, tr)
	if err != nil {
		return nil, err
	}
	return &client.Client{URL: k.URL, HTTP: hc, Attester: a.cfg.Attester}, nil
}

// resource runs the KBS protocol from inside the sandbox; the resource comes
// encrypted to a key made here.
func (a *Agent) resource(ctx context.Context, repo, typ, tag string) ([]byte, error) {
	c, err := a.kbsClient()
	if err != nil {
		return nil, err
	}
	b, err := c.Resource(ctx, repo, typ, tag)
	if err != nil {
		return nil, fmt.Errorf("resource %s/%s/%s: %w", repo, typ, tag, err)
	}
	a.log.Info("resource released to the pod", "resource", repo+"/"+typ+"/"+tag)
	return b, nil
}
