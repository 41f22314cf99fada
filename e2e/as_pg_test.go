package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/sandbox"
)

// TestASReplicasOnPostgres: two `cocoon as serve --store postgres://...`
// replicas with signing keys of their own: a sandbox attests through
// either, and the token verifies with the other's JWKS; a nonce A issued
// is taken by B once (the request then fails on its evidence, not its
// nonce) and refused on replay.
func TestASReplicasOnPostgres(t *testing.T) {
	x := newH(t)
	url := testpg.Start(t).Database(t)
	// Separate state directories (keys of their own) sharing the admin
	// token, which authenticates the key directory's entries.
	stateA, stateB := t.TempDir(), t.TempDir()
	for _, d := range []string{stateA, stateB} {
		os.WriteFile(filepath.Join(d, "admin-token"), []byte("a-shared-admin-token-for-the-replicas\n"), 0o600)
	}
	a := x.startAS("--trust-sim", "--store", url, "--state", stateA)
	b := x.startAS("--trust-sim", "--store", url, "--state", stateB)
	x.mustRun(0, "run", "-d", x.pod(simplePod("asrep", env.busybox, "Never", "exec sleep 1000")))
	x.waitPhase("asrep", sandbox.PhaseRunning)
	for i, u := range []string{a, b} {
		tok, errs := x.mustRun(0, "attest", "asrep", "--as", u)
		if strings.Count(tok, ".") != 2 {
			t.Fatalf("attest via %s: %q %s", u, tok, errs)
		}
		// Each replica signs with keys of its own; the other's JWKS lists
		// them (the shared key directory).
		other := []string{b, a}[i]
		x.mustRun(0, "token", "verify", strings.TrimSpace(tok), "--jwks", other+"/.well-known/jwks.json")
	}
	post := func(u string, body any) (int, map[string]any) {
		j, _ := json.Marshal(body)
		resp, err := http.Post(u, "application/json", bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	_, ch := post(a+"/challenge", nil)
	nonce, _ := ch["nonce"].(string)
	req := map[string]any{"tee": "sim", "evidence": "e30", "nonce": nonce, "runtime_data": map[string]any{"raw": nonce}}
	if code, m := post(b+"/attestation", req); m["type"] == "bad_nonce" || code == 200 {
		t.Fatalf("A's nonce on B: %d %v (want it taken, the evidence refused)", code, m)
	}
	if code, m := post(b+"/attestation", req); code != 401 || m["type"] != "bad_nonce" {
		t.Fatalf("replayed on B: %d %v", code, m)
	}
	if code, m := post(a+"/attestation", req); code != 401 || m["type"] != "bad_nonce" {
		t.Fatalf("replayed on A: %d %v", code, m)
	}
}
