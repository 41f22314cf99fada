// Package rego is the specification of cocoon's policy framework: the
// framework's rules in Rego (framework.rego) and an evaluator of them with
// OPA. The agent evaluates the same framework natively (package policy), so
// that OPA stays out of the TCB; tests here hold the two to the same
// decisions and reasons. Host only.
package rego

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"cocoon.dev/cocoon/internal/regoval"
	"cocoon.dev/cocoon/policy"
)

//go:embed framework.rego
var frameworkRego string

// Evaluator evaluates requests against one policy with prepared OPA
// queries, compiled once.
type Evaluator struct {
	Policy  *policy.Policy
	queries map[string]rego.PreparedEvalQuery
}

// NewEvaluator parses a policy and compiles every enforcement point.
func NewEvaluator(ctx context.Context, text []byte) (*Evaluator, error) {
	p, err := policy.Parse(text)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	// Numbers stay json.Number, so reasons show 67108864, not 6.7108864e+07.
	var data map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		return nil, err
	}
	// Indexes of the policy data for constant-time lookups.
	envIndex := map[string]any{}
	for name, c := range p.Containers {
		set := map[string]any{}
		for _, e := range c.Env {
			set[e] = true
		}
		envIndex[name] = set
	}
	store := inmem.NewFromObjectWithOpts(map[string]any{"policy": data, "index": map[string]any{"env": envIndex}}, inmem.OptReturnASTValuesOnRead(true))
	compiler, err := ast.CompileModules(map[string]string{"framework.rego": frameworkRego})
	if err != nil {
		return nil, fmt.Errorf("policy framework: %w", err)
	}
	e := &Evaluator{Policy: p, queries: map[string]rego.PreparedEvalQuery{}}
	for _, rule := range policy.Rules() {
		q, err := rego.New(
			rego.Query("data.cocoon.framework."+rule),
			rego.Compiler(compiler),
			rego.Store(store),
		).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("policy framework rule %s: %w", rule, err)
		}
		e.queries[rule] = q
	}
	return e, nil
}

// Decide evaluates the enforcement point of method on input, as
// policy.Evaluator.Decide does.
func (e *Evaluator) Decide(ctx context.Context, method string, input map[string]any) (bool, []string, error) {
	rule := policy.RuleFor(method)
	if rule == "" {
		return false, []string{fmt.Sprintf("%s: no enforcement point for this method", method)}, nil
	}
	v, err := regoval.FromGo(input)
	if err != nil {
		return false, nil, fmt.Errorf("%s: policy input: %w", method, err)
	}
	rs, err := e.queries[rule].Eval(ctx, rego.EvalParsedInput(v))
	if err != nil {
		return false, nil, fmt.Errorf("%s: evaluate policy: %w", method, err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return false, []string{fmt.Sprintf("%s: the policy gave no decision", rule)}, nil
	}
	d, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return false, []string{fmt.Sprintf("%s: the policy gave a malformed decision", rule)}, nil
	}
	allowed, _ := d["allowed"].(bool)
	var reasons []string
	if rr, ok := d["reasons"].([]any); ok {
		for _, r := range rr {
			if s, ok := r.(string); ok {
				reasons = append(reasons, s)
			}
		}
	}
	sort.Strings(reasons)
	if !allowed && len(reasons) == 0 {
		reasons = []string{rule + ": denied by the policy"}
	}
	return allowed, reasons, nil
}
