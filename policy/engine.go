package policy

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

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

// RuleFor is the enforcement point of an API method ("" for none).
func RuleFor(method string) string {
	if !agentv1.HasMethod(method) {
		return ""
	}
	return snake(method)
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

// Evaluator evaluates requests against one policy: framework version 1,
// evaluated natively (see native.go), compiled once per policy.
type Evaluator struct {
	Policy *Policy
	Text   []byte
	n      *native
}

// NewEvaluator parses a policy and compiles it.
func NewEvaluator(_ context.Context, text []byte) (*Evaluator, error) {
	p, err := Parse(text)
	if err != nil {
		return nil, err
	}
	n, err := compileNative(p)
	if err != nil {
		return nil, err
	}
	return &Evaluator{Policy: p, Text: text, n: n}, nil
}

// Decide evaluates the enforcement point of method on input and returns
// whether it is allowed and, if not, why.
func (e *Evaluator) Decide(_ context.Context, method string, input map[string]any) (bool, []string, error) {
	rule := RuleFor(method)
	if rule == "" {
		return false, []string{fmt.Sprintf("%s: no enforcement point for this method", method)}, nil
	}
	in, err := toJSON(input)
	if err != nil {
		return false, nil, fmt.Errorf("%s: policy input: %w", method, err)
	}
	allowed, reasons := e.n.decide(rule, obj(in))
	if !allowed && len(reasons) == 0 {
		reasons = []string{rule + ": denied by the policy"}
	}
	return allowed, reasons, nil
}
