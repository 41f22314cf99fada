package agent

import (
	"cocoon.dev/cocoon/internal/httpjson"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// The in-pod API: what containers (unmodified, no SDK) use to get evidence,
// served on 127.0.0.1:8006 in the pod network and on a unix socket mounted
// into every container at /run/cocoon/api.sock.
//
//	GET  /cocoon/v1/evidence?runtime_data=<base64url>   evidence envelope
//	GET  /aa/evidence?runtime_data=<string>            (Confidential Containers alias)
//	POST /attest/raw {"runtime_data": "<base64>"}      (Azure SKR sidecar alias:
//	     REPORT_DATA = SHA-256(runtime_data); answers {"report": "<hex>"})
const (
	// PodAPIAddr is the in-pod API's TCP address in the pod network.
	PodAPIAddr = "127.0.0.1:8006"
	// PodAPISocket is where containers find the in-pod API socket.
	PodAPISocket = "/run/cocoon/api.sock"
)

var respondJSON = httpjson.Respond

func apiFail(w http.ResponseWriter, code int, kind, detail string) {
	httpjson.Fail(w, code, kind, "%s", detail)
}

func (a *Agent) podAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cocoon/v1/evidence", func(w http.ResponseWriter, r *http.Request) {
		rd, err := decodeB64(r.URL.Query().Get("runtime_data"))
		if err != nil {
			apiFail(w, http.StatusBadRequest, "bad_runtime_data", "runtime_data must be base64url (padding optional): "+err.Error())
			return
		}
		a.serveEvidence(w, r.Context(), rd)
	})
	mux.HandleFunc("GET /aa/evidence", func(w http.ResponseWriter, r *http.Request) {
		a.serveEvidence(w, r.Context(), []byte(r.URL.Query().Get("runtime_data")))
	})
	mux.HandleFunc("GET /cocoon/v1/resource/{repo}/{type}/{tag}", a.serveResource)
	mux.HandleFunc("GET /cdh/resource/{repo}/{type}/{tag}", a.serveResource)
	mux.HandleFunc("POST /attest/raw", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			RuntimeData string `json:"runtime_data"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			apiFail(w, http.StatusBadRequest, "bad_request", `body must be {"runtime_data": "<base64>"}: `+err.Error())
			return
		}
		rd, err := decodeB64(req.RuntimeData)
		if err != nil {
			apiFail(w, http.StatusBadRequest, "bad_runtime_data", "runtime_data must be base64: "+err.Error())
			return
		}
		var reportData [64]byte
		h := sha256.Sum256(rd)
		copy(reportData[:], h[:])
		ev, err := a.evidenceFor(r.Context(), rd, reportData)
		if err != nil {
			apiFail(w, statusFor(err), "evidence_unavailable", err.Error())
			return
		}
		respondJSON(w, http.StatusOK, map[string]string{"report": hex.EncodeToString(ev.Report)})
	})
	return mux
}

func (a *Agent) serveEvidence(w http.ResponseWriter, ctx context.Context, rd []byte) {
	ev, err := a.evidence(ctx, rd)
	if err != nil {
		apiFail(w, statusFor(err), "evidence_unavailable", err.Error())
		return
	}
	respondJSON(w, http.StatusOK, ev)
}

func statusFor(err error) int {
	switch {
	case errors.Is(err, errInvalid):
		return http.StatusBadRequest
	case errors.Is(err, errState):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// ServePodAPI serves the in-pod API on each listener until ctx ends.
func (a *Agent) ServePodAPI(ctx context.Context, ls ...net.Listener) {
	hs := &http.Server{Handler: a.podAPI(), ReadHeaderTimeout: 5 * time.Second}
	for _, l := range ls {
		go func() { _ = hs.Serve(l) }()
	}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
}

// serveResource fetches a secret from the pod's key broker (the one its
// policy names) and returns the plaintext to the container.
func (a *Agent) serveResource(w http.ResponseWriter, r *http.Request) {
	b, err := a.resource(r.Context(), r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag"))
	if err != nil {
		apiFail(w, statusFor(err), "resource_unavailable", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(b)
	clear(b)
}
