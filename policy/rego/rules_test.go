package rego

import (
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/policy"
)

// TestFrameworkHasEveryRule: the embedded framework defines the rule of
// every API method in the descriptor (an undefined one would deny the
// method with "the policy gave no decision"), and no rule for a method the
// API does not have.
func TestFrameworkHasEveryRule(t *testing.T) {
	mod, err := ast.ParseModule("framework.rego", frameworkRego)
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, r := range mod.Rules {
		defined[r.Head.Name.String()] = true
	}
	methods := agentv1.Methods()
	if len(methods) < 14 {
		t.Fatalf("only %d methods in the descriptor", len(methods))
	}
	for _, m := range methods {
		if !defined[policy.Rules()[m]] {
			t.Errorf("API method %s: the framework has no rule %q", m, policy.Rules()[m])
		}
	}
	if policy.RuleFor("NoSuchMethod") != "" {
		t.Error("a method the API lacks has a rule")
	}
}
