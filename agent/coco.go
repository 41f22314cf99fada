package agent

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"runtime/debug"

	"cocoon.dev/cocoon/tee"
)

// The Confidential Containers guest-components REST API (api-server-rest,
// served on 127.0.0.1:8006 in a CoCo pod), with its semantics, so that
// workloads written for CoCo run unchanged:
//
//	GET  /aa/evidence?runtime_data=<s>[&encoding=base64]   REPORT_DATA = runtime_data, zero-padded
//	GET  /aa/additional-evidence?runtime_data=<s>          "" (no additional devices)
//	GET  /aa/token?token_type=kbs                          {"token", "tee_keypair"}
//	POST /aa/aael {"domain", "operation", "content"}       runtime event log (aael.go)
//	GET  /info                                             {"version", "tee", "feature"}
//	GET  /cdh/resource/<repo>/<type>/<tag>                 (podapi.go)
//
// /aa/evidence gives the workload the REPORT_DATA it names, as upstream
// does. What keeps that from satisfying another consumer: every binding
// cocoon's own services accept fills all 64 bytes with a SHA-512 output, so
// this route refuses runtime data whose bytes 48..63 are not zero (a
// SHA-384 or SHA-256 digest, what CoCo clients bind, fits); the key broker
// accepts evidence made here only under the KBS protocol's own binding,
// which is what a stock KBS client in the pod makes it for.

// maxRawReportData is how much of REPORT_DATA a workload may choose.
const maxRawReportData = 48

func cocoRuntimeData(r *http.Request) ([]byte, error) {
	q := r.URL.Query()
	if !q.Has("runtime_data") {
		return nil, fmt.Errorf("runtime_data is missing: give ?runtime_data=<string>, or base64url with &encoding=base64")
	}
	s := q.Get("runtime_data")
	switch enc := q.Get("encoding"); enc {
	case "":
		return []byte(s), nil
	case "base64":
		b, err := decodeB64(s)
		if err != nil {
			return nil, fmt.Errorf("runtime_data is not base64url: %v", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("encoding %q is not supported; use encoding=base64 or none", enc)
	}
}

// rawReportData pads runtime data to REPORT_DATA, refusing what would not
// fit or could equal one of cocoon's own bindings.
func rawReportData(rd []byte) ([64]byte, error) {
	var out [64]byte
	if len(rd) > len(out) {
		return out, fmt.Errorf("runtime_data is %d bytes; REPORT_DATA holds 64", len(rd))
	}
	copy(out[:], rd)
	for _, b := range out[maxRawReportData:] {
		if b != 0 {
			return out, fmt.Errorf("runtime_data is %d bytes with data past byte %d: a workload may choose at most the first %d bytes of REPORT_DATA "+
				"(a SHA-384 digest fits), so that its evidence never equals the agent's own 64-byte bindings; bind a hash of longer data", len(rd), maxRawReportData, maxRawReportData)
		}
	}
	return out, nil
}

// rawNonceAttester is an attester whose evidence binds a nonce of any
// length up to 64 bytes as it is (Azure's vTPM quote).
type rawNonceAttester interface {
	RawEvidence(ctx context.Context, nonce []byte) ([]byte, error)
}

// kbsTEEName is the KBS protocol's (kbs-types) name of a TEE.
func kbsTEEName(k tee.Kind) string {
	if k == tee.Sim {
		return "sample"
	}
	return string(k)
}

func (a *Agent) cocoRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /aa/evidence", a.aaEvidence)
	mux.HandleFunc("GET /aa/additional-evidence", func(w http.ResponseWriter, r *http.Request) {
		if _, err := cocoRuntimeData(r); err != nil {
			apiFail(w, http.StatusBadRequest, "bad_runtime_data", err.Error())
			return
		}
		// No additional attesters (GPUs and other devices): upstream
		// answers an empty body then.
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("GET /aa/token", a.aaToken)
	mux.HandleFunc("POST /aa/aael", a.aaelRecord)
	mux.HandleFunc("GET /cocoon/v1/aael", a.aaelRead)
	mux.HandleFunc("GET /info", func(w http.ResponseWriter, _ *http.Request) {
		info := map[string]any{"version": agentVersion(), "feature": "all"}
		if a.cfg.Attester != nil {
			info["tee"] = kbsTEEName(a.cfg.Attester.Kind())
		}
		respondJSON(w, http.StatusOK, info)
	})
}

func agentVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "cocoon " + bi.Main.Version
	}
	return "cocoon"
}

// aaEvidence answers the attestation agent's evidence for the TEE: the TDX
// quote in its {"cc_eventlog", "quote"} form; on SNP its
// {"attestation_report", "cert_chain"} form (the sev crate's), which
// Trustee's verifier and cocoon's key broker read — for the simulated TEE
// too, whose reports are SNP reports signed by the simulated chip.
func (a *Agent) aaEvidence(w http.ResponseWriter, r *http.Request) {
	rd, err := cocoRuntimeData(r)
	if err != nil {
		apiFail(w, http.StatusBadRequest, "bad_runtime_data", err.Error())
		return
	}
	reportData, err := rawReportData(rd)
	if err != nil {
		apiFail(w, http.StatusBadRequest, "bad_runtime_data", err.Error())
		return
	}
	if c, ok := a.cfg.Attester.(rawNonceAttester); ok {
		// Azure's vTPM: guest-components' az-*-vtpm attesters quote
		// runtime_data as it is, unpadded, and answer the evidence JSON.
		body, err := c.RawEvidence(r.Context(), rd)
		if err != nil {
			apiFail(w, statusFor(err), "evidence_unavailable", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
		return
	}
	ev, err := a.evidenceFor(r.Context(), reportData)
	if err != nil {
		apiFail(w, statusFor(err), "evidence_unavailable", err.Error())
		return
	}
	var body []byte
	switch ev.TEE {
	case tee.TDX:
		body, err = json.Marshal(map[string]any{"cc_eventlog": nil, "quote": base64.StdEncoding.EncodeToString(ev.Report)})
	default: // SNP, and the simulated TEE's SNP-shaped reports
		body, err = tee.SNPToAA(ev.Report, ev.Certs)
	}
	if err != nil {
		apiFail(w, http.StatusInternalServerError, "evidence_unavailable", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(body)
}

// aaToken runs the KBS protocol with the policy's broker and gives the
// workload the token and the key pair it attests (made here, for this
// request only), as the attestation agent's KBS token getter does: the
// workload can then fetch resources with the token itself.
func (a *Agent) aaToken(w http.ResponseWriter, r *http.Request) {
	switch t := r.URL.Query().Get("token_type"); t {
	case "kbs":
	case "":
		apiFail(w, http.StatusBadRequest, "bad_request", "token_type is missing: use ?token_type=kbs")
		return
	default:
		apiFail(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("token_type %q is not served; use kbs (coco_as tokens come from the attestation service through the key broker)", t))
		return
	}
	c, err := a.kbsClient()
	if err != nil {
		apiFail(w, statusFor(err), "token_unavailable", err.Error())
		return
	}
	s, err := c.Attest(r.Context())
	if err != nil {
		apiFail(w, http.StatusBadGateway, "token_unavailable", err.Error())
		return
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.Key)
	if err != nil {
		apiFail(w, http.StatusInternalServerError, "token_unavailable", err.Error())
		return
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	body, _ := json.Marshal(map[string]string{"token": s.Token, "tee_keypair": string(keyPEM)})
	clear(keyPEM)
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(body)
	clear(body)
	a.log.Info("KBS token given to the pod")
}
