package policy

import (
	"testing"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// TestNativeHasEveryRule: the native engine has a rule for every API method
// in the descriptor. A method it lacks falls to the default, a denial with
// no reason; every real rule, on an empty request, either allows or says
// why it denies.
func TestNativeHasEveryRule(t *testing.T) {
	n, err := compileNative(&Policy{Containers: map[string]*Container{}, Images: map[string]Image{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range agentv1.Methods() {
		allowed, reasons := n.decide(RuleFor(m), jsonObj{})
		if !allowed && len(reasons) == 0 {
			t.Errorf("API method %s (rule %q): the native engine has no rule for it", m, RuleFor(m))
		}
	}
	if allowed, reasons := n.decide("no_such_rule", jsonObj{}); allowed || len(reasons) != 0 {
		t.Errorf("an unknown rule decided %v %v", allowed, reasons)
	}
}
