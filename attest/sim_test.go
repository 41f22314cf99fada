package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"cocoon.dev/cocoon/internal/testsim"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"

	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func authority(t testing.TB) *sim.Authority { return testsim.Authority(t) }

func simEvidence(t testing.TB, runtime []byte) (*tee.Evidence, sim.Launch) {
	a := authority(t)
	l := sim.Launch{Measurement: sim.Measure(sim.LaunchConfig{Isolation: "process", AgentDigest: "sha256:00"}), HostData: sha256.Sum256([]byte("policy"))}
	raw, err := a.Report(l, tee.BindHostChallenge.ReportData(runtime))
	if err != nil {
		t.Fatal(err)
	}
	return &tee.Evidence{TEE: tee.Sim, Report: raw, Certs: map[string][]byte{"vcek": a.Vcek.Raw}, RuntimeData: runtime, Binding: tee.BindHostChallenge}, l
}

func TestSimEvidence(t *testing.T) {
	ctx := context.Background()
	ev, l := simEvidence(t, []byte(`{"nonce":"abc"}`))
	if _, err := Verify(ctx, ev, Options{}); err == nil || !strings.Contains(err.Error(), "simulated TEE") {
		t.Fatalf("untrusted sim evidence: %v", err)
	}
	o := Options{TrustSim: true, SimRoots: authority(t).RootsPEM(), Binding: tee.BindHostChallenge}
	c, err := Verify(ctx, ev, o)
	if err != nil {
		t.Fatal(err)
	}
	if c.TEE != tee.Sim || c.Measurement != hex.EncodeToString(l.Measurement[:]) || c.HostData != hex.EncodeToString(l.HostData[:]) || c.Debug || !strings.Contains(c.Platform, "INSECURE") {
		t.Errorf("claims %+v", c)
	}
	// Sim evidence relabelled as real SNP does not chain to AMD's roots.
	real := *ev
	real.TEE = tee.SNP
	if _, err := Verify(ctx, &real, Options{Offline: true}); err == nil {
		t.Error("sim evidence passed as SNP")
	}
	// Another sim authority's roots do not verify it.
	other, err := sim.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, ev, Options{TrustSim: true, SimRoots: other.RootsPEM()}); err == nil {
		t.Error("verified with another simulator's roots")
	}
	// The runtime data must be what REPORT_DATA binds.
	bad := *ev
	bad.RuntimeData = []byte("other")
	if _, err := Verify(ctx, &bad, o); err == nil || !strings.Contains(err.Error(), "report_data") {
		t.Errorf("unbound runtime data: %v", err)
	}
	// Every changed byte of the signed part or signature fails.
	for i := 0; i < 0x2A0+144; i += 7 {
		b := append([]byte{}, ev.Report...)
		b[i] ^= 0x80
		if _, err := Verify(ctx, &tee.Evidence{TEE: tee.Sim, Report: b, Certs: ev.Certs}, o); err == nil {
			t.Errorf("byte 0x%x changed and the sim report verified", i)
		}
	}
}

// TestSimReportVerifiesWithGoSevGuest: the sim format is the real one.
func TestSimReportVerifiesWithGoSevGuest(t *testing.T) {
	ev, _ := simEvidence(t, []byte("x"))
	roots, err := SimRoots(authority(t).RootsPEM())
	if err != nil {
		t.Fatal(err)
	}
	r, err := abi.ReportToProto(ev.Report)
	if err != nil {
		t.Fatal(err)
	}
	att := &spb.Attestation{Report: r, CertificateChain: &spb.CertificateChain{VcekCert: ev.Certs["vcek"]}}
	if err := verify.SnpAttestation(att, &verify.Options{TrustedRoots: roots, DisableCertFetching: true}); err != nil {
		t.Fatalf("go-sev-guest: %v", err)
	}
}
