package as

import (
	"crypto/ecdsa"
	"encoding/base64"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/veraison/ear"

	"cocoon.dev/cocoon/tee/sim"
)

// TestVeraisonEARLibraryReadsTokens: veraison's own EAR library (the
// reference implementation of draft-fv-rats-ear) verifies the service's
// token with the published key, and reads the attested TEE key, the
// appraisal policy id and the trust vector.
func TestVeraisonEARLibraryReadsTokens(t *testing.T) {
	f := newFixture(t, nil)
	n := f.nonce(t)
	req := simRequest(t, n, sim.Launch{})
	code, out := f.post(t, "/attestation", req)
	if code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	tok, _ := out["token"].(string)
	ks := f.keySet(t)
	if len(ks.Keys) == 0 {
		t.Fatal("the service publishes no key")
	}
	pub, ok := ks.Keys[len(ks.Keys)-1].Key.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("signing key %T", ks.Keys[0].Key)
	}
	var ar ear.AttestationResult
	if err := ar.Verify([]byte(tok), jwa.KeyAlgorithmFrom(ks.Keys[len(ks.Keys)-1].Algorithm), pub); err != nil {
		t.Fatalf("veraison/ear refuses the token: %v", err)
	}
	if ar.Nonce == nil || *ar.Nonce != n {
		t.Errorf("eat_nonce %v, want %s", ar.Nonce, n)
	}
	app := ar.Submods["cpu0"]
	if app == nil {
		t.Fatalf("no cpu0 submodule: %v", ar.Submods)
	}
	if app.AppraisalPolicyID == nil || *app.AppraisalPolicyID != AppraisalPolicyID {
		t.Errorf("ear.appraisal-policy-id %v", app.AppraisalPolicyID)
	}
	if app.Status == nil || app.Status.String() != "warning" {
		t.Errorf("status %v (sim evidence is never affirming)", app.Status)
	}
	k, err := app.GetKeyAttestation()
	if err != nil {
		t.Fatalf("GetKeyAttestation: %v", err)
	}
	got, ok := k.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("akpub is a %T", k)
	}
	want := req["runtime_data"].(map[string]any)["structured"].(map[string]any)["tee-pubkey"].(map[string]any)
	pt, _ := got.Bytes()
	if len(pt) != 65 || base64.RawURLEncoding.EncodeToString(pt[1:33]) != want["x"] || base64.RawURLEncoding.EncodeToString(pt[33:]) != want["y"] {
		t.Errorf("akpub %T %v is not the TEE key %v", k, k, want)
	}
	// Every value of the trust vector is one AR4SI defines for its claim.
	tv := app.TrustVector
	defined := map[string][]int{
		"instance-identity": {0, 2, 96, 97}, "configuration": {0, 2, 3, 32, 96}, "executables": {0, 2, 3, 32, 33, 96},
		"file-system": {0, 2, 32, 96}, "hardware": {0, 2, 32, 96, 97}, "runtime-opaque": {0, 2, 32, 96},
		"storage-opaque": {0, 2, 32, 96}, "sourced-data": {0, 2, 32, 96},
	}
	for name, v := range map[string]int{
		"instance-identity": int(tv.InstanceIdentity), "configuration": int(tv.Configuration), "executables": int(tv.Executables),
		"file-system": int(tv.FileSystem), "hardware": int(tv.Hardware), "runtime-opaque": int(tv.RuntimeOpaque),
		"storage-opaque": int(tv.StorageOpaque), "sourced-data": int(tv.SourcedData),
	} {
		ok := false
		for _, d := range defined[name] {
			ok = ok || d == v
		}
		if !ok {
			t.Errorf("trust vector %s = %d: not a value AR4SI defines (%v)", name, v, defined[name])
		}
	}
}
