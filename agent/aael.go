package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"

	"cocoon.dev/cocoon/eventlog"
	"cocoon.dev/cocoon/tee/azvtpm"
)

// The runtime event log (guest-components' AAEL): a workload records an
// event with POST /aa/aael; the agent extends the TEE's runtime measurement
// register with the event's digest and appends the entry to the log, under
// one lock so that the log's order is the register's. Relying parties read
// the register in evidence (on an Azure vTPM, PCR 15 in the quote) and the
// log at GET /cocoon/v1/aael, and replay one against the other
// (eventlog.Replay); or pin the register's value after known events as a
// reference value.
//
// Only the workload reaches these routes (the in-pod API); the host has no
// request that extends a register.

// runtimeMeasurer is an attester with a runtime measurement register.
type runtimeMeasurer interface {
	ExtendRuntime(ctx context.Context, digest [32]byte) error
}

// runtimePCR is the register the log's entries name; the vTPM attester
// extends the same one (azvtpm.RuntimePCR).
const runtimePCR = azvtpm.RuntimePCR

// maxEventLog bounds the log the agent keeps in the TEE's memory.
const maxEventLog = 1 << 20

// aaelLog is the agent's runtime event log.
type aaelLog struct {
	mu  sync.Mutex
	buf []byte
}

var errLogFull = errors.New("the runtime event log is full")

// record extends the register and then appends the entry: a failed extend
// leaves the log as it was.
func (l *aaelLog) record(ctx context.Context, m runtimeMeasurer, e eventlog.Event) error {
	entry, digest, err := e.Entry(runtimePCR)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf)+len(entry) > maxEventLog {
		return errLogFull
	}
	if err := m.ExtendRuntime(ctx, digest); err != nil {
		return err
	}
	l.buf = append(l.buf, entry...)
	return nil
}

func (l *aaelLog) bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.buf...)
}

// aaelSuccess and aaelUnsupported are the attestation agent's answers, byte
// for byte (api-server-rest src/client/aa.rs).
const (
	aaelSuccess     = `{"success":"true"}`
	aaelUnsupported = `{"success":"false","message": "The platform does not support runtime measurement"}`
)

func (a *Agent) aaelRecord(w http.ResponseWriter, r *http.Request) {
	var ev eventlog.Event
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	if err := dec.Decode(&ev); err != nil {
		apiFail(w, http.StatusBadRequest, "bad_request", `body must be {"domain", "operation", "content"}: `+err.Error())
		return
	}
	m, ok := a.cfg.Attester.(runtimeMeasurer)
	if !ok {
		// SEV-SNP has no runtime measurement register, nor the simulated
		// SNP chip: the attestation agent's own answer for that case.
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, aaelUnsupported)
		return
	}
	if err := ev.Validate(); err != nil {
		apiFail(w, http.StatusBadRequest, "bad_event", "the event cannot be recorded: "+err.Error())
		return
	}
	switch err := a.aael.record(r.Context(), m, ev); {
	case errors.Is(err, errLogFull):
		apiFail(w, http.StatusInsufficientStorage, "log_full", "the runtime event log holds its maximum of 1 MiB; no further events can be recorded in this pod")
		return
	case err != nil:
		a.log.Error("runtime event log: extend the register", "err", err)
		apiFail(w, http.StatusInternalServerError, "internal", "the runtime measurement register could not be extended; the event was not recorded")
		return
	}
	a.log.Info("runtime event recorded", "domain", ev.Domain, "operation", ev.Operation)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, aaelSuccess)
}

func (a *Agent) aaelRead(w http.ResponseWriter, _ *http.Request) {
	if _, ok := a.cfg.Attester.(runtimeMeasurer); !ok {
		apiFail(w, http.StatusNotFound, "not_supported", "this TEE has no runtime measurement register, so it keeps no runtime event log")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(a.aael.bytes())
}
