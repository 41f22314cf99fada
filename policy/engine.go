package policy

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"cocoon.dev/cocoon/internal/regoval"
)

//go:embed framework.rego
var frameworkRego string

// Rules maps every agent API method to its enforcement point (a rule of the
// framework). A method without one is denied; a test compares this list
// with the API.
func Rules() map[string]string {
	m := map[string]string{}
	for _, method := range methods {
		m[method] = ruleFor(method)
	}
	return m
}

var methods = [...]string{"CreateSandbox", "PullImage", "PullProgress", "CreateContainer", "StartContainer",
	"RemoveContainer", "ExecProcess", "SignalContainer", "WaitContainer", "ReadLogs", "ListContainers",
	"Stats", "Shutdown", "GetEvidence"}

// ruleFor is the enforcement point of an API method ("" for none).
func ruleFor(method string) string {
	switch method {
	case "CreateSandbox":
		return "create_sandbox"
	case "PullImage":
		return "pull_image"
	case "PullProgress":
		return "pull_progress"
	case "CreateContainer":
		return "create_container"
	case "StartContainer":
		return "start_container"
	case "RemoveContainer":
		return "remove_container"
	case "ExecProcess":
		return "exec_process"
	case "SignalContainer":
		return "signal_container"
	case "WaitContainer":
		return "wait_container"
	case "ReadLogs":
		return "read_logs"
	case "ListContainers":
		return "list_containers"
	case "Stats":
		return "stats"
	case "Shutdown":
		return "shutdown"
	case "GetEvidence":
		return "get_evidence"
	}
	return ""
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
