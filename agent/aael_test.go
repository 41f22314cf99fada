package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"

	"cocoon.dev/cocoon/eventlog"
	"cocoon.dev/cocoon/internal/testsim"
	"cocoon.dev/cocoon/internal/testtpm"
	"cocoon.dev/cocoon/tee/azvtpm"
	"cocoon.dev/cocoon/tee/sim"
)

// TestAAELOnVTPM: on an Azure CVM's vTPM (swtpm behind the simulated
// paravisor) the workload's events, sent as guest-components' README sends
// them, extend PCR 15, and the log the pod API serves replays to the PCR
// the TPM quotes; an event that cannot be recorded is refused with the
// reason, and neither the PCR nor the log changes.
func TestAAELOnVTPM(t *testing.T) {
	pv, err := testsim.Authority(t).NewParavisor(testtpm.Start(t), sim.Launch{})
	if err != nil {
		t.Fatal(err)
	}
	att := azvtpm.NewSNP(pv, func(context.Context) ([]byte, error) { return pv.VCEK(), nil })
	a, _ := startAgentWith(t, func(c *Config) { c.Attester = att; c.Enforcer = testEnforcer{} })
	h := a.podAPI()
	pcr15 := func() []byte {
		pcrs, err := azvtpm.ReadPCRs(pv)
		if err != nil {
			t.Fatal(err)
		}
		return pcrs[azvtpm.RuntimePCR]
	}
	reset := pcr15()
	if !bytes.Equal(reset, make([]byte, 32)) {
		t.Fatalf("PCR 15 is not fresh: %x", reset)
	}
	for _, body := range []string{
		`{"domain":"test","operation":"test","content":"test"}`, // api-server-rest/README.md
		`{"domain":"github.com/acme","operation":"load-model","content":"sha256:abcd weights v2"}`,
	} {
		if w := podRequest(h, http.MethodPost, "/aa/aael", body); w.Code != 200 || w.Body.String() != aaelSuccess {
			t.Fatalf("%s: %d %s", body, w.Code, w.Body)
		}
	}
	after := pcr15()
	logNow := podRequest(h, http.MethodGet, "/cocoon/v1/aael", "").Body.Bytes()
	recs, err := eventlog.Parse(logNow)
	if err != nil || len(recs) != 2 || recs[1].Event.Operation != "load-model" {
		t.Fatalf("the log: %v %+v", err, recs)
	}
	if got := eventlog.Replay(recs, azvtpm.RuntimePCR, [32]byte(reset)); !bytes.Equal(got[:], after) {
		t.Fatalf("the log replays to %x; PCR 15 is %x", got, after)
	}
	// The quote a relying party gets shows the same PCR 15.
	ev, err := att.Collect(context.Background(), []byte("n"))
	if err != nil || len(ev.TPMQuote.PCRs) != 24 || ev.TPMQuote.PCRs[azvtpm.RuntimePCR] != hex.EncodeToString(after) {
		t.Fatalf("PCR 15 in the quote: %v", err)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"line break", `{"domain":"d","operation":"o","content":"a\nb"}`, "line break"},
		{"space in the domain", `{"domain":"a b","operation":"o","content":"c"}`, "one word"},
		{"no operation", `{"domain":"d","content":"c"}`, "operation is empty"},
		{"not JSON", `not json`, "body must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := podRequest(h, http.MethodPost, "/aa/aael", tc.body)
			if w.Code != 400 || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("%d %s, want 400 saying %q", w.Code, w.Body, tc.want)
			}
			if !bytes.Equal(pcr15(), after) || !bytes.Equal(a.aael.bytes(), logNow) {
				t.Fatal("a refused event changed PCR 15 or the log")
			}
		})
	}
}

type failingMeasurer struct{ countingAttester }

func (*failingMeasurer) ExtendRuntime(context.Context, [32]byte) error {
	return errors.New("TPM_RC_LOCALITY: secret detail")
}

// TestAAELExtendFails: when the register cannot be extended the event is not
// logged, and the cause stays in the agent's log, not the answer.
func TestAAELExtendFails(t *testing.T) {
	a, _ := startAgentWith(t, func(c *Config) { c.Attester = &failingMeasurer{}; c.Enforcer = testEnforcer{} })
	w := podRequest(a.podAPI(), http.MethodPost, "/aa/aael", `{"domain":"d","operation":"o","content":"c"}`)
	if w.Code != 500 || strings.Contains(w.Body.String(), "secret detail") || !strings.Contains(w.Body.String(), "not recorded") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if len(a.aael.bytes()) != 0 {
		t.Error("an event whose extend failed was logged")
	}
}

// TestAAELLogFull: the log the agent keeps is bounded; past it, nothing
// more is extended or logged.
func TestAAELLogFull(t *testing.T) {
	m := &countingMeasurer{}
	var l aaelLog
	ev := eventlog.Event{Domain: "d", Operation: "o", Content: strings.Repeat("c", eventlog.MaxContent)}
	var err error
	for err == nil {
		err = l.record(context.Background(), m, ev)
	}
	n := m.n
	if !errors.Is(err, errLogFull) || len(l.bytes()) > maxEventLog {
		t.Fatalf("%v after %d bytes", err, len(l.bytes()))
	}
	if err := l.record(context.Background(), m, ev); !errors.Is(err, errLogFull) || m.n != n {
		t.Errorf("a full log: %v, %d extends (was %d)", err, m.n, n)
	}
}

type countingMeasurer struct{ n int }

func (c *countingMeasurer) ExtendRuntime(context.Context, [32]byte) error { c.n++; return nil }
