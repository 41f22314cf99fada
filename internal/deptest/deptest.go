// Package deptest checks what a binary links, in the manner of Tailscale's
// tstest/deptest: the TEE's binaries (cocoon-agent, cocoon-init) must not
// link host-only code, so that what runs inside the TEE stays small and
// reviewable.
package deptest

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// Deps lists the packages pkg links on linux/amd64 (go list -deps), with
// the import path that brings each in.
func Deps(t testing.TB, pkg string) map[string]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports,Module", pkg)
	cmd.Env = append(cmd.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	by := map[string]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if _, ok := by[p.ImportPath]; !ok {
			by[p.ImportPath] = ""
		}
		for _, i := range p.Imports {
			if _, seen := by[i]; !seen || by[i] == "" {
				by[i] = p.ImportPath
			}
		}
	}
	return by
}

// under reports whether package d is p or below it.
func under(d, p string) bool { return d == p || strings.HasPrefix(d, p+"/") }

// Forbid fails the test for every package pkg links that is, or is below,
// one of forbidden and not below one of allowed, naming who imports it.
func Forbid(t *testing.T, pkg string, forbidden, allowed []string) {
	t.Helper()
	deps := Deps(t, pkg)
	if len(deps) < 10 {
		t.Fatalf("go list found only %d packages for %s: the check is broken", len(deps), pkg)
	}
	var bad []string
	for d, by := range deps {
		ok := false
		for _, a := range allowed {
			ok = ok || under(d, a)
		}
		for _, f := range forbidden {
			if under(d, f) && !ok {
				bad = append(bad, fmt.Sprintf("%s (imported by %s)", d, by))
			}
		}
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Errorf("%s links the forbidden package %s", pkg, b)
	}
}
