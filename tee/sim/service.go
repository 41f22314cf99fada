package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"cocoon.dev/cocoon/tee"
)

// Server is the simulated secure processor's endpoint for one launch: the
// host runtime serves it on a socket only that launch's agent reaches. The
// agent chooses REPORT_DATA and nothing else.
type Server struct {
	auth   *Authority
	launch Launch
}

// NewServer binds an authority to one registered launch.
func NewServer(a *Authority, l Launch) *Server { return &Server{auth: a, launch: l} }

type reportRequest struct {
	ReportData []byte `json:"report_data"`
}

// ServeHTTP answers POST /v1/report {"report_data": <base64 of 64 bytes>}
// with an evidence envelope.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/report" || r.Method != http.MethodPost {
		http.Error(w, "POST /v1/report", http.StatusNotFound)
		return
	}
	var req reportRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || len(req.ReportData) != 64 {
		http.Error(w, "report_data must be 64 bytes (base64)", http.StatusBadRequest)
		return
	}
	var rd [64]byte
	copy(rd[:], req.ReportData)
	raw, err := s.auth.Report(s.launch, rd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&tee.Evidence{TEE: tee.Sim, Report: raw, Certs: map[string][]byte{"vcek": s.auth.Vcek.Raw}})
}

// Serve serves s on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	if err := hs.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// Client is the agent's attester for the simulated TEE: it asks the
// simulated secure processor at a unix socket for reports.
type Client struct {
	hc *http.Client
}

// NewClient returns an attester that talks to the socket sock.
func NewClient(sock string) *Client {
	return NewClientDial(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	})
}

// NewClientDial returns an attester that reaches the simulated secure
// processor through dial (a VM's channel to its host).
func NewClientDial(dial func(context.Context) (net.Conn, error)) *Client {
	return &Client{hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
	}}}
}

// Kind implements tee.Attester.
func (*Client) Kind() tee.Kind { return tee.Sim }

// Evidence implements tee.Attester.
func (c *Client) Evidence(ctx context.Context, reportData [64]byte) (*tee.Evidence, error) {
	body, _ := json.Marshal(reportRequest{ReportData: reportData[:]})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sim/v1/report", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("simulated secure processor: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, tee.MaxEvidenceBytes))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("simulated secure processor: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return tee.ParseEvidence(b)
}
