package attest

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"strings"
	"testing"

	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

// TestBindingsOneByOne plays each documented REPORT_DATA binding against
// every consumer's check: evidence made under one binding verifies only
// under that binding, and the refusal names what it was made for.
func TestBindingsOneByOne(t *testing.T) {
	ctx := context.Background()
	a := authority(t)
	data := []byte(`{"nonce":"n-123","tee-pubkey":{"crv":"P-256","kty":"EC","x":"x","y":"y"}}`)
	for _, made := range tee.Bindings() {
		raw, err := a.Report(sim.Launch{}, made.ReportData(data))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tee.Bindings() {
			t.Run(made.Short()+"->"+want.Short(), func(t *testing.T) {
				// The consumer computes what it expects from the data it
				// holds; the envelope says nothing (a relaying host may
				// strip the label).
				ev := &tee.Evidence{TEE: tee.Sim, Report: raw, Certs: map[string][]byte{"vcek": a.Vcek.Raw}}
				o := Options{TrustSim: true, SimRoots: a.RootsPEM(), Binding: want, BoundData: data}
				_, err := Verify(ctx, ev, o)
				if made == want {
					if err != nil {
						t.Fatalf("own binding refused: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("evidence made for %s accepted as %s", made, want)
				}
				if !strings.Contains(err.Error(), "for "+string(made)+", not for "+string(want)) {
					t.Errorf("the refusal does not name the binding: %v", err)
				}
				// With the envelope's word kept, the refusal is the same.
				ev.Binding, ev.RuntimeData = made, data
				if _, err := Verify(ctx, ev, o); err == nil || !strings.Contains(err.Error(), string(made)) {
					t.Errorf("labelled envelope: %v", err)
				}
			})
		}
	}
}

// TestUnlabelledHashesSatisfyNoBinding: the plain hashes of the runtime data
// (what the Azure-style /attest/raw route, the raw /aa/evidence route and
// stock KBS clients bind) satisfy none of cocoon's own bindings: only the
// KBS protocol's, which only the key broker accepts.
func TestUnlabelledHashesSatisfyNoBinding(t *testing.T) {
	data := []byte(`{"nonce":"n"}`)
	s256 := sha256.Sum256(data)
	s384 := sha512.Sum384(data)
	var p256, p384 [64]byte
	copy(p256[:], s256[:])
	copy(p384[:], s384[:])
	for _, rd := range [][64]byte{sha512.Sum512(data), p256, p384} {
		if b, ok := tee.Identify(rd[:], data); ok && !b.Foreign() {
			t.Errorf("an unlabelled hash satisfies cocoon's %s", b)
		}
	}
	// Labels are distinct and each gives another REPORT_DATA.
	seen := map[[64]byte]tee.Binding{}
	for _, b := range tee.Bindings() {
		rd := b.ReportData(data)
		if o, dup := seen[rd]; dup {
			t.Errorf("%s and %s give the same REPORT_DATA", b, o)
		}
		seen[rd] = b
		if p, err := tee.ParseBinding(b.Short()); err != nil || p != b {
			t.Errorf("ParseBinding(%q) = %q, %v", b.Short(), p, err)
		}
	}
	if _, err := tee.ParseBinding("sha1"); err == nil {
		t.Error("an unknown binding parsed")
	}
}

// TestBindingRequired: runtime data in an envelope is checked only under a
// binding the verifier names; the envelope alone never chooses it.
func TestBindingRequired(t *testing.T) {
	ev, _ := simEvidence(t, []byte("nonce"))
	o := Options{TrustSim: true, SimRoots: authority(t).RootsPEM()}
	if _, err := Verify(context.Background(), ev, o); err == nil || !strings.Contains(err.Error(), "names no binding") {
		t.Errorf("no binding named: %v", err)
	}
}
