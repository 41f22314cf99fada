package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	sevabi "github.com/google/go-sev-guest/abi"

	"cocoon.dev/cocoon/as/maa"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee"
)

// The Azure SKR sidecar's API (confidential-sidecar-containers, cmd/skr),
// served by the agent on the pod's loopback when the policy turns it on
// (annotation cocoon.dev/skr), so code written for Azure's confidential
// containers runs unchanged:
//
//	GET  /status                                         {"message": "Status OK"}
//	POST /attest/raw      {"runtime_data"}               {"report": "<hex>"}
//	POST /attest/combined {"runtime_data"}               {"endorsed_tcb", "endorsements", "evidence", "uvm_endorsements"}
//	POST /attest/maa      {"maa_endpoint", "runtime_data"}                  {"token"}
//	POST /key/release     {"maa_endpoint", "akv_endpoint", "kid", "access_token"}  {"key": "<JWK>"}
//
// Errors are {"error": "..."}, 400 for a malformed request and 403 when
// attestation or release fails, as upstream. REPORT_DATA is SHA-256 of the
// runtime data, zero-padded (tee.BindSHA256), as upstream.

func skrFail(w http.ResponseWriter, code int, format string, args ...any) {
	respondJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// skrDecode reads a JSON body with the fields named required.
func skrDecode(r *http.Request, v any, required map[string]*string) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(v); err != nil {
		return fmt.Errorf("invalid request format: %w", err)
	}
	for name, p := range required {
		if *p == "" {
			return fmt.Errorf("invalid request format: %q is required", name)
		}
	}
	return nil
}

func (a *Agent) skrAPI() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		respondJSON(w, http.StatusOK, map[string]string{"message": "Status OK"})
	})
	mux.HandleFunc("POST /attest/raw", a.skrRaw)
	mux.HandleFunc("POST /attest/combined", a.skrCombined)
	mux.HandleFunc("POST /attest/maa", a.skrMAA)
	mux.HandleFunc("POST /key/release", a.skrRelease)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		skrFail(w, http.StatusNotFound, "%s %s is not a route of the SKR API (GET /status, POST /attest/raw, /attest/combined, /attest/maa, /key/release)", r.Method, r.URL.Path)
	})
	return podOnly(mux)
}

// skrEvidence decodes runtime_data (base64) and gets a report binding
// SHA-256 of it.
func (a *Agent) skrEvidence(w http.ResponseWriter, r *http.Request, rdB64 string) (*tee.Evidence, []byte, bool) {
	rd, err := base64.StdEncoding.DecodeString(rdB64)
	if err != nil {
		skrFail(w, http.StatusBadRequest, "decoding base64-encoded runtime data of request failed: %v", err)
		return nil, nil, false
	}
	if len(rd) > maxRuntimeData {
		skrFail(w, http.StatusBadRequest, "runtime_data is %d bytes; at most %d", len(rd), maxRuntimeData)
		return nil, nil, false
	}
	ev, err := a.evidenceFor(r.Context(), maa.ReportData(rd))
	if err != nil {
		skrFail(w, http.StatusForbidden, "failure to fetch attestation report: %v", err)
		return nil, nil, false
	}
	return ev, rd, true
}

// skrRuntimeEvidence reads a {"runtime_data"} body and gets its report.
func (a *Agent) skrRuntimeEvidence(w http.ResponseWriter, r *http.Request) (*tee.Evidence, bool) {
	var req struct {
		RuntimeData string `json:"runtime_data"`
	}
	if err := skrDecode(r, &req, map[string]*string{"runtime_data": &req.RuntimeData}); err != nil {
		skrFail(w, http.StatusBadRequest, "%v", err)
		return nil, false
	}
	ev, _, ok := a.skrEvidence(w, r, req.RuntimeData)
	return ev, ok
}

func (a *Agent) skrRaw(w http.ResponseWriter, r *http.Request) {
	ev, ok := a.skrRuntimeEvidence(w, r)
	if !ok {
		return
	}
	respondJSON(w, http.StatusOK, map[string]string{"report": hex.EncodeToString(ev.Report)})
}

// certChainPEM is the report's certificates, VCEK first.
func certChainPEM(ev *tee.Evidence) ([]byte, [][]byte) {
	var out []byte
	var ders [][]byte
	for _, role := range []string{"vcek", "vlek", "ask", "ark"} {
		if c := ev.Certs[role]; len(c) > 0 {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
			ders = append(ders, c)
		}
	}
	return out, ders
}

func (a *Agent) skrCombined(w http.ResponseWriter, r *http.Request) {
	ev, ok := a.skrRuntimeEvidence(w, r)
	if !ok {
		return
	}
	if ev.TEE != tee.SNP && ev.TEE != tee.Sim {
		skrFail(w, http.StatusBadRequest, "combined attestation data is an SEV-SNP report and its endorsements; this TEE is %s", ev.TEE)
		return
	}
	rep, err := sevabi.ReportToProto(ev.Report)
	if err != nil {
		skrFail(w, http.StatusInternalServerError, "failure to parse the attestation report: %v", err)
		return
	}
	chain, _ := certChainPEM(ev)
	respondJSON(w, http.StatusOK, map[string]string{
		"endorsed_tcb":     fmt.Sprintf("%016x", rep.GetReportedTcb()),
		"endorsements":     base64.StdEncoding.EncodeToString(chain),
		"evidence":         base64.StdEncoding.EncodeToString(ev.Report),
		"uvm_endorsements": "",
	})
}

// sameEndpoint compares a pinned https URL with an endpoint as Azure code
// names it ("host", "host:port" or a URL).
func sameEndpoint(pinned, given string) bool {
	u, err := url.Parse(pinned)
	if err != nil {
		return false
	}
	g := strings.TrimSuffix(given, "/")
	if gu, err := url.Parse(g); err == nil && gu.Host != "" {
		g = gu.Host
	}
	norm := func(h string) string { return strings.ToLower(strings.TrimSuffix(h, ":443")) }
	return g != "" && norm(g) == norm(u.Host)
}

// pinnedAS is the attestation service the loaded policy names.
func (a *Agent) pinnedAS() (*policy.KBS, error) {
	e, ok := a.cfg.Enforcer.(*policy.Engine)
	if !ok || e.Loaded() == nil {
		return nil, fmt.Errorf("no policy is loaded: %w", errState)
	}
	if e.Loaded().Policy.AllowAll {
		return nil, fmt.Errorf("the sandbox runs an allow-all policy: the agent attests nothing for it: %w", errState)
	}
	return e.Loaded().Policy.AttestationService, nil
}

func (a *Agent) skrMAA(w http.ResponseWriter, r *http.Request) {
	var req struct {
		MAAEndpoint string `json:"maa_endpoint"`
		RuntimeData string `json:"runtime_data"`
	}
	if err := skrDecode(r, &req, map[string]*string{"maa_endpoint": &req.MAAEndpoint, "runtime_data": &req.RuntimeData}); err != nil {
		skrFail(w, http.StatusBadRequest, "%v", err)
		return
	}
	as, err := a.pinnedAS()
	if err != nil || as == nil {
		skrFail(w, http.StatusForbidden, "attestation failed: the pod's policy pins no attestation service (annotation cocoon.dev/attestation-service): the agent asks only the one it pins")
		return
	}
	if !sameEndpoint(as.URL, req.MAAEndpoint) {
		skrFail(w, http.StatusForbidden, "attestation failed: maa_endpoint %q is not the attestation service this pod's policy pins (%s)", req.MAAEndpoint, as.URL)
		return
	}
	ev, rd, ok := a.skrEvidence(w, r, req.RuntimeData)
	if !ok {
		return
	}
	tok, err := a.maaToken(r.Context(), as, ev, rd)
	if err != nil {
		skrFail(w, http.StatusForbidden, "attestation failed: %v", err)
		return
	}
	respondJSON(w, http.StatusOK, map[string]string{"token": tok})
}

// maaToken asks the pinned attestation service's MAA-compatible route, over
// TLS checked against the CA the policy pins, through the host's egress.
func (a *Agent) maaToken(ctx context.Context, as *policy.KBS, ev *tee.Evidence, rd []byte) (string, error) {
	if ev.TEE != tee.SNP && ev.TEE != tee.Sim {
		return "", fmt.Errorf("MAA's SEV-SNP route takes SNP reports; this TEE is %s", ev.TEE)
	}
	_, certs := certChainPEM(ev)
	body, err := maa.NewRequest(ev.Report, certs, rd)
	if err != nil {
		return "", err
	}
	var ca []byte
	if as.CA != "" {
		ca = []byte(as.CA)
	}
	tr, _ := a.cfg.Transport.(*http.Transport)
	hc, err := client.HTTPClient(ca, tr)
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(as.URL, "/")+maa.Path+"?api-version="+maa.APIVersion, bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(hr)
	if err != nil {
		return "", fmt.Errorf("attestation service %s: %w", as.URL, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e maa.ErrorBody
		if json.Unmarshal(rb, &e) == nil && e.Error.Message != "" {
			return "", fmt.Errorf("attestation service: %s: %s", e.Error.Code, e.Error.Message)
		}
		return "", fmt.Errorf("attestation service: %s", resp.Status)
	}
	var out maa.Response
	if err := json.Unmarshal(rb, &out); err != nil || out.Token == "" {
		return "", errors.New("attestation service: no token in its answer")
	}
	return out.Token, nil
}

// skrRelease releases a key from the pod's key broker: the agent runs the
// KBS protocol itself (its own key-broker binding, a key pair made here),
// the broker's release policy judges keyvault/keys/<name>, and the key
// reaches the container that asked. access_token is not used: the broker
// authenticates the TEE by attestation, not by an Entra ID token.
func (a *Agent) skrRelease(w http.ResponseWriter, r *http.Request) {
	var req struct {
		MAAEndpoint string `json:"maa_endpoint"`
		AKVEndpoint string `json:"akv_endpoint"`
		KID         string `json:"kid"`
		AccessToken string `json:"access_token"`
	}
	if err := skrDecode(r, &req, map[string]*string{"maa_endpoint": &req.MAAEndpoint, "akv_endpoint": &req.AKVEndpoint, "kid": &req.KID}); err != nil {
		skrFail(w, http.StatusBadRequest, "%v", err)
		return
	}
	name, err := protocol.KeyVaultName(req.KID)
	if err != nil {
		skrFail(w, http.StatusBadRequest, "%v", err)
		return
	}
	k, err := a.kbsConfig()
	if err != nil {
		skrFail(w, http.StatusForbidden, "secure key release failed: %v", err)
		return
	}
	if !sameEndpoint(k.URL, req.AKVEndpoint) {
		skrFail(w, http.StatusForbidden, "secure key release failed: akv_endpoint %q is not the key broker this pod's policy pins (%s)", req.AKVEndpoint, k.URL)
		return
	}
	if as, _ := a.pinnedAS(); as != nil && !sameEndpoint(as.URL, req.MAAEndpoint) {
		skrFail(w, http.StatusForbidden, "secure key release failed: maa_endpoint %q is not the attestation service this pod's policy pins (%s)", req.MAAEndpoint, as.URL)
		return
	}
	b, err := a.resource(r.Context(), protocol.KeyVaultRepo, protocol.KeyVaultType, name)
	if err != nil {
		skrFail(w, http.StatusForbidden, "secure key release failed: %v", err)
		return
	}
	defer clear(b)
	if !json.Valid(b) || !bytes.Contains(b, []byte(`"kty"`)) {
		skrFail(w, http.StatusForbidden, "secure key release failed: keyvault/keys/%s is not a JWK (create keys with cocoon kbs key create)", name)
		return
	}
	respondJSON(w, http.StatusOK, map[string]string{"key": string(b)})
}

// startSKR serves the SKR API on the pod's loopback at the port the loaded
// policy names, if it names one.
func (a *Agent) startSKR() error {
	e, ok := a.cfg.Enforcer.(*policy.Engine)
	if !ok || e.Loaded() == nil || e.Loaded().Policy.SKRPort == 0 {
		return nil
	}
	port := e.Loaded().Policy.SKRPort
	if a.cfg.ListenPod == nil {
		return fmt.Errorf("the policy turns on the Azure SKR API on port %d, but this sandbox has no pod network of its own to serve it in", port)
	}
	l, err := a.cfg.ListenPod(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("the Azure SKR API on 127.0.0.1:%d: %w", port, err)
	}
	if err := podListener(l); err != nil {
		l.Close()
		return err
	}
	hs := &http.Server{Handler: a.skrAPI(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	go func() {
		<-a.done
		hs.Close()
	}()
	a.log.Info("Azure SKR API serving", "addr", l.Addr().String())
	return nil
}
