package as

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"cocoon.dev/cocoon/as/maa"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/internal/httpjson"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/token"
)

// The MAA-compatible route: POST /attest/SevSnpVm?api-version=2022-08-01
// with Microsoft Azure Attestation's request body answers {"token": JWT}
// whose claims carry MAA's names, so code written for MAA tokens (Azure
// relying parties, the SKR sidecar's callers) reads them unchanged.
// REPORT_DATA must be SHA-256 of the runtime data, zero-padded (what the
// SKR sidecar binds): tee.BindSHA256, over data the workload chose.

func maaFail(w http.ResponseWriter, code int, errCode, format string, args ...any) {
	var b maa.ErrorBody
	b.Error.Code, b.Error.Message = errCode, fmt.Sprintf(format, args...)
	respond(w, code, b)
}

func (s *Service) maaAttest(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("api-version"); v == "" {
		maaFail(w, http.StatusBadRequest, "MissingApiVersion", "the api-version query parameter is required (api-version=%s)", maa.APIVersion)
		return
	}
	var req maa.Request
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxRequestBytes))
	if err := dec.Decode(&req); err != nil {
		maaFail(w, http.StatusBadRequest, "InvalidParameter", "the body is not an MAA SEV-SNP attestation request: %v", err)
		return
	}
	report, certs, runtimeData, err := req.Decode()
	if err != nil {
		maaFail(w, http.StatusBadRequest, "InvalidParameter", "%v", err)
		return
	}
	claims, err := s.verifyMAA(r.Context(), report, certs, runtimeData)
	if err != nil {
		if errors.Is(err, attest.ErrVerification) {
			maaFail(w, http.StatusBadRequest, "InvalidParameter", "%v", err)
			return
		}
		maaInternal(w, s, "attestation", err)
		return
	}
	app, err := s.appraise(r.Context(), claims)
	if err != nil {
		maaInternal(w, s, "appraisal", err)
		return
	}
	if app.Status == token.Contraindicated {
		maaFail(w, http.StatusBadRequest, "PolicyEvaluationError", "the appraisal policy refuses this evidence: %v", app.Policy.Reasons)
		return
	}
	tok, err := s.cfg.Signer.SignClaims(s.maaClaims(claims, app, runtimeData, req.RuntimeData.DataType))
	if err != nil {
		maaInternal(w, s, "signing", err)
		return
	}
	respond(w, http.StatusOK, maa.Response{Token: tok})
}

func maaInternal(w http.ResponseWriter, s *Service, what string, err error) {
	id := httpjson.LogInternal(s.log, what, err)
	maaFail(w, http.StatusInternalServerError, "InternalError", "%s failed inside the service; give its operator the request id %s", what, id)
}

// verifyMAA verifies an SNP report (or, on a service that trusts it, a sim
// report: the request does not say which) under the SHA-256 binding.
func (s *Service) verifyMAA(ctx context.Context, report []byte, certs [][]byte, runtimeData []byte) (*attest.Claims, error) {
	ev := &tee.Evidence{TEE: tee.SNP, Report: report, Certs: map[string][]byte{}}
	for i, role := range []string{"vcek", "ask", "ark"} {
		if i < len(certs) {
			ev.Certs[role] = certs[i]
		}
	}
	o := s.cfg.Verify
	o.Binding, o.BoundData = tee.BindSHA256, runtimeData
	o.Reference = nil
	o.AllowDebug = true
	c, err := s.verifier.Verify(ctx, ev, o)
	if err != nil && o.TrustSim {
		sim := *ev
		sim.TEE = tee.Sim
		if sc, serr := s.verifier.Verify(ctx, &sim, o); serr == nil {
			return sc, nil
		}
	}
	return c, err
}

// maaClaims are the token's claims, with MAA's names for what cocoon
// verified, and cocoon's own for what MAA has no name for.
func (s *Service) maaClaims(c *attest.Claims, app *token.Appraisal, runtimeData []byte, dataType string) map[string]any {
	now := time.Now()
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	m := map[string]any{
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(s.cfg.Signer.TTL()).Unix(),
		"iss": s.cfg.Issuer, "jti": hex.EncodeToString(jti[:]),
		"x-ms-ver":                        "1.0",
		"x-ms-attestation-type":           "sevsnpvm",
		"x-ms-sevsnpvm-hostdata":          c.HostData,
		"x-ms-sevsnpvm-launchmeasurement": c.Measurement,
		"x-ms-sevsnpvm-reportdata":        c.ReportData,
		"x-ms-sevsnpvm-is-debuggable":     c.Debug,
		"x-cocoon-tee":                    string(c.TEE),
		"x-cocoon-status":                 app.Status,
		"x-cocoon-reasons":                app.Policy.Reasons,
	}
	if c.TEE == tee.Sim {
		m["x-cocoon-simulated"] = true
	}
	if snp := c.SNP; snp != nil {
		m["x-ms-sevsnpvm-guestsvn"] = snp.GuestSVN
		m["x-ms-sevsnpvm-vmpl"] = snp.VMPL
		m["x-ms-sevsnpvm-reportid"] = snp.ReportID
		m["x-ms-sevsnpvm-smt-allowed"] = snp.PolicySMT
		m["x-ms-sevsnpvm-migration-allowed"] = snp.PolicyMigMA
		m["x-ms-sevsnpvm-bootloader-svn"] = snp.ReportedTCB.Bootloader
		m["x-ms-sevsnpvm-tee-svn"] = snp.ReportedTCB.TEE
		m["x-ms-sevsnpvm-snpfw-svn"] = snp.ReportedTCB.SNP
		m["x-ms-sevsnpvm-microcode-svn"] = snp.ReportedTCB.Microcode
	}
	// MAA puts JSON runtime data, parsed, under x-ms-runtime; binary data
	// is only in REPORT_DATA's hash.
	if dataType == "JSON" {
		var rt any
		if json.Unmarshal(runtimeData, &rt) == nil {
			m["x-ms-runtime"] = rt
		}
	} else {
		m["x-cocoon-runtime-data"] = base64.RawURLEncoding.EncodeToString(runtimeData)
	}
	return m
}
