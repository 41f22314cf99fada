package agent

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"cocoon.dev/cocoon/internal/httpjson"
	"cocoon.dev/cocoon/tee"
)

// The in-pod API: what containers (unmodified, no SDK) use to get evidence,
// served on 127.0.0.1:8006 in the pod network and on a unix socket mounted
// into every container at /run/cocoon/api.sock — never on an address the
// host or the pod network reaches: ServePodAPI refuses any other listener and
// every request from a non-loopback peer is refused.
//
//	GET  /cocoon/v1/evidence?runtime_data=<base64url>   evidence envelope,
//	     REPORT_DATA bound under cocoon/v1/workload
//	/aa/..., /info, /cdh/resource/...                  (Confidential Containers'
//	     guest-components API, coco.go)
//	POST /attest/raw {"runtime_data": "<base64>"}      (Azure SKR sidecar alias:
//	     REPORT_DATA = SHA-256(runtime_data) then 32 zero bytes, which no
//	     SHA-512 binding can equal; answers {"report": "<hex>"})
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
	a.cocoRoutes(mux)
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
		if len(rd) > maxRuntimeData {
			apiFail(w, http.StatusBadRequest, "bad_runtime_data", fmt.Sprintf("runtime_data is %d bytes; at most %d", len(rd), maxRuntimeData))
			return
		}
		var reportData [64]byte
		h := sha256.Sum256(rd)
		copy(reportData[:], h[:])
		ev, err := a.evidenceFor(r.Context(), reportData)
		if err != nil {
			apiFail(w, statusFor(err), "evidence_unavailable", err.Error())
			return
		}
		respondJSON(w, http.StatusOK, map[string]string{"report": hex.EncodeToString(ev.Report)})
	})
	return podOnly(mux)
}

// podOnly refuses a request from anything but the pod itself: a unix socket
// peer (the socket is mounted only into the pod's containers) or a loopback
// address. A listener on another address is refused by ServePodAPI; this is
// the second wall, should one ever be added.
func podOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fromPod(r.RemoteAddr) {
			apiFail(w, http.StatusForbidden, "not_from_pod", "the in-pod API answers only the pod's own containers (loopback or its socket)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fromPod: a unix-socket peer ("" or "@") or a loopback IP.
func fromPod(remote string) bool {
	if remote == "" || remote == "@" {
		return true
	}
	ap, err := netip.ParseAddrPort(remote)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// podListener: a unix socket or a TCP listener on a loopback address.
func podListener(l net.Listener) error {
	switch addr := l.Addr().(type) {
	case *net.UnixAddr:
		return nil
	case *net.TCPAddr:
		if ip, ok := netip.AddrFromSlice(addr.IP); ok && ip.Unmap().IsLoopback() {
			return nil
		}
	}
	return fmt.Errorf("the in-pod API may listen only on loopback or a unix socket, not %s %s", l.Addr().Network(), l.Addr())
}

func (a *Agent) serveEvidence(w http.ResponseWriter, ctx context.Context, rd []byte) {
	ev, err := a.evidence(ctx, tee.BindWorkload, rd)
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

// ServePodAPI serves the in-pod API on each listener until ctx ends. It
// refuses (and serves nothing) when a listener is not loopback or a unix
// socket: the in-pod API must never be reachable by the host or the pod
// network.
func (a *Agent) ServePodAPI(ctx context.Context, ls ...net.Listener) error {
	for _, l := range ls {
		if err := podListener(l); err != nil {
			return err
		}
	}
	hs := &http.Server{Handler: a.podAPI(), ReadHeaderTimeout: 5 * time.Second}
	for _, l := range ls {
		go func() { _ = hs.Serve(l) }()
	}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	return nil
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
