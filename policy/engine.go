package policy

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/regoval"
)

//go:embed framework.rego
var frameworkRego string

// Rules maps every agent API method to its enforcement point (a rule of the
// framework named as the method in snake case: ExecProcess -> exec_process).
// The methods come from the API's descriptor (agentv1.Methods); a method the
// framework has no rule for is denied, and a test compares the two.
func Rules() map[string]string {
	m := map[string]string{}
	for _, method := range agentv1.Methods() {
		m[method] = snake(method)
	}
	return m
}

// ruleFor is the enforcement point of an API method ("" for none).
func ruleFor(method string) string {
	for _, m := range agentv1.Methods() {
		if m == method {
			return snake(method)
		}
	}
	return ""
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// AgentGCPercent is the GOGC cocoon-agent runs with (and a 256 MiB soft
// memory limit): policy decisions allocate, and fewer collections on the
// agent's small heap keep the tail latency of decisions low.
const AgentGCPercent = 1000

// Evaluator evaluates requests against one policy with prepared OPA
// queries, compiled once.
type Evaluator struct {
	Policy  *Policy
	Text    []byte
	queries map[string]rego.PreparedEvalQuery
}

// NewEvaluator parses a policy and compiles every enforcement point.
func NewEvaluator(ctx context.Context, text []byte) (*Evaluator, error) {
	p, err := Parse(text)
	if err != nil {
		return nil, err
	}
	// The store holds the policy data as plain JSON values.
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
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
	e := &Evaluator{Policy: p, Text: text, queries: map[string]rego.PreparedEvalQuery{}}
	for _, rule := range Rules() {
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

// Decide evaluates the enforcement point of method on input and returns
// whether it is allowed and, if not, why.
func (e *Evaluator) Decide(ctx context.Context, method string, input map[string]any) (bool, []string, error) {
	rule := ruleFor(method)
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
