package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/tee"
)

// countingAttester signs nothing: it records how often the TEE was asked
// and what REPORT_DATA it was given, so a test can prove a refusal reached
// no report.
type countingAttester struct {
	calls atomic.Int32
	last  atomic.Value // [64]byte
}

func (c *countingAttester) Kind() tee.Kind { return tee.Sim }

func (c *countingAttester) Evidence(_ context.Context, rd [64]byte) (*tee.Evidence, error) {
	c.calls.Add(1)
	c.last.Store(rd)
	// An SNP-shaped report (version 2) carrying REPORT_DATA where the
	// hardware puts it, unsigned.
	r := make([]byte, tee.SNPReportSize)
	r[0] = 2
	copy(r[0x50:], rd[:])
	return &tee.Evidence{TEE: tee.Sim, Report: r}, nil
}

// TestPodAPIAnswersOnlyThePod: the in-pod API serves a loopback or
// unix-socket peer, refuses any other peer before the TEE is asked, and
// cannot be served on a listener the host or the pod network reaches.
func TestPodAPIAnswersOnlyThePod(t *testing.T) {
	att := &countingAttester{}
	a, _ := startAgentWith(t, func(c *Config) { c.Attester = att; c.Enforcer = testEnforcer{} })
	h := a.podAPI()
	rd := base64.RawURLEncoding.EncodeToString([]byte("workload-nonce"))
	cases := []struct {
		remote string
		code   int
	}{
		{"127.0.0.1:40000", http.StatusOK},
		{"[::1]:40000", http.StatusOK},
		{"@", http.StatusOK},
		{"", http.StatusOK},
		{"10.244.1.7:40000", http.StatusForbidden}, // a pod-network peer
		{"192.168.1.1:5555", http.StatusForbidden}, // the host's bridge
		{"[fe80::1]:40000", http.StatusForbidden},
		{"not-an-address", http.StatusForbidden},
	}
	for _, tc := range cases {
		before := att.calls.Load()
		r := httptest.NewRequest(http.MethodGet, "/cocoon/v1/evidence?runtime_data="+rd, nil)
		r.RemoteAddr = tc.remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("peer %q: %d %s, want %d", tc.remote, w.Code, w.Body, tc.code)
		}
		if tc.code != http.StatusOK && att.calls.Load() != before {
			t.Errorf("peer %q: refused, yet the TEE was asked for a report", tc.remote)
		}
		if tc.code == http.StatusOK {
			var ev tee.Evidence
			if err := json.Unmarshal(w.Body.Bytes(), &ev); err != nil || ev.Binding != tee.BindWorkload {
				t.Errorf("peer %q: evidence %s (%v), want it bound for the workload", tc.remote, w.Body, err)
			}
			if got, want := att.last.Load().([64]byte), tee.BindWorkload.ReportData([]byte("workload-nonce")); got != want {
				t.Errorf("REPORT_DATA %x, want the workload binding %x", got, want)
			}
		}
	}
	// Listeners: loopback and unix sockets only.
	for _, addr := range []string{"0.0.0.0:0", "[::]:0"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.ServePodAPI(context.Background(), l); err == nil {
			t.Errorf("the in-pod API served on %s", l.Addr())
		}
		l.Close()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.ServePodAPI(ctx, l); err != nil {
		t.Errorf("loopback listener refused: %v", err)
	}
}

// FuzzHostEvidence: whatever a host sends, its evidence is bound under the
// host's label, or under the attestation service's over exactly
// {"nonce": <printable nonce>} — never over data carrying a key.
func FuzzHostEvidence(f *testing.F) {
	f.Add([]byte("nonce"), int32(0))
	f.Add([]byte(`{"nonce":"n","tee-pubkey":{"kty":"EC"}}`), int32(1))
	f.Add([]byte("a\x00b"), int32(1))
	f.Add([]byte{}, int32(7))
	att := &countingAttester{}
	a := &Agent{cfg: Config{Attester: att}}
	f.Fuzz(func(t *testing.T, rd []byte, binding int32) {
		ev, err := a.hostEvidence(context.Background(), &agentv1.GetEvidenceRequest{RuntimeData: rd, Binding: agentv1.EvidenceBinding(binding)})
		if err != nil {
			return
		}
		got := att.last.Load().([64]byte)
		switch ev.Binding {
		case tee.BindHostChallenge:
			if got != tee.BindHostChallenge.ReportData(rd) {
				t.Fatal("host challenge bound otherwise")
			}
		case tee.BindAttestationService:
			var m map[string]any
			if err := json.Unmarshal(ev.RuntimeData, &m); err != nil || len(m) != 1 || m["nonce"] != string(rd) {
				t.Fatalf("attestation-service data %q is not {nonce} over the host's bytes", ev.RuntimeData)
			}
			if got != tee.BindAttestationService.ReportData(ev.RuntimeData) {
				t.Fatal("attestation-service evidence bound otherwise")
			}
		default:
			t.Fatalf("a host request got binding %q", ev.Binding)
		}
	})
}
