package kbs

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"cocoon.dev/cocoon/internal/regoval"
)

// DefaultReleasePolicy refuses simulated TEEs (unless the broker runs with
// --allow-sim), debuggable guests and contraindicated appraisals.
//
//go:embed default-policy.rego
var DefaultReleasePolicy string

// PolicyStore keeps the release policy where every replica reads it.
type PolicyStore interface {
	// ReleasePolicy is the stored policy and its version ("" and 0 when
	// none was set).
	ReleasePolicy(ctx context.Context) (text string, version int64, err error)
	// SetReleasePolicy stores a policy and returns its version.
	SetReleasePolicy(ctx context.Context, text string) (int64, error)
	// WaitPolicyChange returns when the policy may have changed, or after
	// at most d.
	WaitPolicyChange(ctx context.Context, d time.Duration) error
}

// releasePolicy is a compiled release policy. The query binds data.resource
// to the resource asked for; input is the token's claims.
type releasePolicy struct {
	text  string
	query rego.PreparedEvalQuery
}

func compileReleasePolicy(ctx context.Context, text string, allowSim bool) (*releasePolicy, error) {
	if _, err := ast.ParseModule("policy.rego", text); err != nil {
		return nil, fmt.Errorf("release policy: %w", err)
	}
	store := inmem.NewFromObject(map[string]any{"config": map[string]any{"allow_sim": allowSim}})
	q, err := rego.New(
		rego.Query(`x := [data.policy.allow, object.get(data.policy, "reasons", [])] with data.resource as input["cocoon.resource"]`),
		rego.Module("policy.rego", text), rego.Store(store),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("release policy: %w", err)
	}
	return &releasePolicy{text: text, query: q}, nil
}

// decide evaluates the policy for claims and the resource path parts.
func (p *releasePolicy) decide(ctx context.Context, claims map[string]any, repo, typ, tag string) (bool, []string, error) {
	in := make(map[string]any, len(claims)+1)
	for k, v := range claims {
		in[k] = v
	}
	in["cocoon.resource"] = map[string]any{"repo": repo, "type": typ, "tag": tag, "path": repo + "/" + typ + "/" + tag}
	v, err := regoval.FromGo(in)
	if err != nil {
		return false, nil, err
	}
	rs, err := p.query.Eval(ctx, rego.EvalParsedInput(v))
	if err != nil {
		return false, nil, err
	}
	if len(rs) != 1 {
		return false, []string{"the release policy defines no data.policy.allow"}, nil
	}
	pair, ok := rs[0].Bindings["x"].([]any)
	if !ok || len(pair) != 2 {
		return false, nil, errors.New("release policy: malformed result")
	}
	allow, _ := pair[0].(bool)
	var reasons []string
	if rr, ok := pair[1].([]any); ok {
		for _, r := range rr {
			if s, ok := r.(string); ok {
				reasons = append(reasons, s)
			}
		}
	}
	return allow, reasons, nil
}
