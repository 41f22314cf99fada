package kbs

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/tee"
)

// The RCAR handshake (request, challenge, attestation, response) as the KBS
// protocol 0.4.0 defines it and Trustee serves it. Two evidence shapes are
// accepted in "tee-evidence":
//
//   - the protocol's composite {"primary_evidence", "additional_evidence"}
//     (what guest-components' kbs_protocol sends): REPORT_DATA binds the
//     canonical {"additional-evidence", "nonce", "tee-pubkey"} under the
//     hash the challenge chose (SHA-384 when its extra-params say nothing),
//     zero-padded — tee.BindSHA384 and its siblings;
//   - cocoon's evidence envelope alone (the agent's own client): REPORT_DATA
//     binds the canonical {"nonce", "tee-pubkey"} under tee.BindKeyBroker,
//     which no workload route of the agent can produce.

// The protocol's bodies (package protocol, which clients link alone).
type (
	AuthRequest   = protocol.AuthRequest
	Challenge     = protocol.Challenge
	AttestRequest = protocol.AttestRequest
	RuntimeData   = protocol.RuntimeData
)

func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// kbsTEENames are the KBS protocol TEEs the broker verifies.
const kbsTEENames = "snp, tdx, sgx, az-snp-vtpm, az-tdx-vtpm and sample (cocoon's simulated TEE)"

// kbsTEE maps a KBS protocol TEE name (kbs-types) to cocoon's. "sample",
// the protocol's test TEE, is cocoon's simulated TEE, accepted only where
// sim evidence is (kbs serve --allow-sim).
func kbsTEE(name string) (tee.Kind, error) {
	switch name {
	case "snp":
		return tee.SNP, nil
	case "tdx":
		return tee.TDX, nil
	case "sample", "sim":
		return tee.Sim, nil
	case "sgx":
		return tee.SGX, nil
	case "az-snp-vtpm":
		return tee.AzureSNP, nil
	case "az-tdx-vtpm":
		return tee.AzureTDX, nil
	case "cca", "csv", "se", "tpm", "hygon-dcu", "nvidia", "sample-device":
		return "", fmt.Errorf("tee %q is a KBS protocol TEE this broker does not verify; it verifies %s", name, kbsTEENames)
	}
	return "", fmt.Errorf("tee %q is unknown; use one of %s", name, kbsTEENames)
}

// ParseAuth decodes an auth body strictly: the protocol version must be
// exactly 0.4.0 (build metadata aside), as Trustee requires.
func ParseAuth(r io.Reader) (*AuthRequest, error) {
	var a AuthRequest
	if err := decodeStrict(r, &a); err != nil {
		return nil, fmt.Errorf("auth body: %w", err)
	}
	v, _, _ := strings.Cut(a.Version, "+")
	if v != ProtocolVersion {
		return nil, fmt.Errorf("KBS Client Protocol Version Mismatch: expect =%s while the request is %q", ProtocolVersion, a.Version)
	}
	if _, err := kbsTEE(a.TEE); err != nil {
		return nil, fmt.Errorf("auth body: %w", err)
	}
	return &a, nil
}

// chooseBinding picks the hash the composite evidence binds with, from the
// algorithms the client says it supports (extra-params
// "supported-hash-algorithms"): SHA-384, the protocol's default, when it
// supports it or says nothing, and then the challenge's extra-params stay
// "" as Trustee's do; else SHA-512 or SHA-256, named in the challenge's
// "selected-hash-algorithm".
func chooseBinding(extra any) (tee.Binding, any, error) {
	m, _ := extra.(map[string]any)
	list, ok := m["supported-hash-algorithms"].([]any)
	if !ok {
		return tee.BindSHA384, "", nil
	}
	has := map[string]bool{}
	for _, v := range list {
		if s, ok := v.(string); ok {
			has[strings.ToLower(s)] = true
		}
	}
	switch {
	case has["sha384"]:
		return tee.BindSHA384, "", nil
	case has["sha512"]:
		return tee.BindSHA512, map[string]any{"selected-hash-algorithm": "sha512"}, nil
	case has["sha256"]:
		return tee.BindSHA256, map[string]any{"selected-hash-algorithm": "sha256"}, nil
	}
	return "", nil, fmt.Errorf("auth body: none of the supported-hash-algorithms %v is one this broker binds with (sha256, sha384, sha512)", list)
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) {
	a, err := ParseAuth(r.Body)
	if err != nil {
		bodyFail(w, ErrAttestation, err)
		return
	}
	kind, _ := kbsTEE(a.TEE)
	binding, extra, err := chooseBinding(a.ExtraParams)
	if err != nil {
		fail(w, ErrAttestation, "%v", err)
		return
	}
	id, nonce, err := s.sessions.Create(r.Context(), kind, binding)
	if err != nil {
		fail(w, ErrBusy, "%v", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: id, Path: "/kbs", HttpOnly: true, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	respond(w, http.StatusOK, Challenge{Nonce: nonce, ExtraParams: extra})
}

// Attestation is a parsed attest body.
type Attestation struct {
	Request  *AttestRequest
	Evidence *tee.Evidence
	// Composite is true for the protocol's composite evidence; Additional
	// is its additional_evidence string, bound into REPORT_DATA.
	Composite  bool
	Additional string
	// AASNP is true when the primary evidence was the attestation agent's
	// SNP form, which does not say whether the chip is real or simulated:
	// the session's TEE decides which roots verify it.
	AASNP bool
}

// ParseAttest decodes an attest body strictly, checks the TEE key and reads
// the evidence: composite or cocoon's envelope.
func ParseAttest(r io.Reader) (*Attestation, error) {
	var a AttestRequest
	if err := decodeStrict(r, &a); err != nil {
		return nil, fmt.Errorf("attest body: %w", err)
	}
	if a.RuntimeData.Nonce == "" {
		return nil, errors.New(`attest body: "runtime-data.nonce" is missing`)
	}
	if err := CheckJWK(a.RuntimeData.TEEPubKey); err != nil {
		return nil, fmt.Errorf(`attest body: "runtime-data.tee-pubkey": %w`, err)
	}
	out := &Attestation{Request: &a}
	raw := []byte(a.TEEEvidence)
	var comp struct {
		Primary    json.RawMessage `json:"primary_evidence"`
		Additional *string         `json:"additional_evidence"`
	}
	members := objectMembers(raw)
	if _, ok := members["primary_evidence"]; ok {
		members = nil // the primary evidence's own, below
		if err := decodeStrict(bytes.NewReader(raw), &comp); err != nil {
			return nil, fmt.Errorf(`attest body: "tee-evidence": %w`, err)
		}
		if comp.Additional == nil {
			return nil, errors.New(`attest body: "tee-evidence.additional_evidence" is missing (send "" when there is none)`)
		}
		if err := checkAdditional(*comp.Additional); err != nil {
			return nil, err
		}
		out.Composite, out.Additional, raw = true, *comp.Additional, comp.Primary
	}
	ev, aa, err := parsePrimary(raw, members)
	if err != nil {
		return nil, fmt.Errorf(`attest body: "tee-evidence": %w`, err)
	}
	out.Evidence, out.AASNP = ev, aa
	return out, nil
}

// objectMembers decodes raw as a JSON object into its members, in one
// pass; nil when raw is not a JSON object. The evidence's form is told by
// its members' names.
func objectMembers(raw []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// checkAdditional refuses evidence of further devices (GPUs, ...): the
// broker cannot verify it, and binding what it cannot check would be a lie.
func checkAdditional(s string) error {
	if s == "" {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return fmt.Errorf(`attest body: "tee-evidence.additional_evidence" must be "" or a JSON object string: %w`, err)
	}
	if len(m) > 0 {
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		return fmt.Errorf(`attest body: additional evidence for %v cannot be verified by this broker; attest without additional devices`, names)
	}
	return nil
}

// parsePrimary reads the primary evidence: cocoon's envelope (as an object
// or a JSON string), or one of the attestation agent's forms: SNP
// {"attestation_report", "cert_chain"}, TDX {"cc_eventlog", "quote"} (the
// event logs are not appraised), SGX {"quote"} (told from TDX by the
// quote's TEE type), Azure vTPM {"version", "tpm_quote", "hcl_report",
// "vcek" | "td_quote"}.
// parsePrimary reads the primary evidence; members are raw's members when
// the caller decoded them already (nil: decoded here).
func parsePrimary(raw []byte, members map[string]json.RawMessage) (*tee.Evidence, bool, error) {
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) > 0 && t[0] == '"' {
		var str string
		if json.Unmarshal(raw, &str) == nil {
			raw, members = []byte(str), nil
		}
	}
	if members == nil {
		members = objectMembers(raw)
	}
	if _, ok := members["attestation_report"]; ok {
		r, certs, err := tee.SNPFromAA(raw)
		if err != nil {
			return nil, false, err
		}
		return &tee.Evidence{TEE: tee.SNP, Report: r, Certs: certs}, true, nil
	}
	ev, err := parseOther(raw, members)
	return ev, false, err
}

func parseOther(raw []byte, members map[string]json.RawMessage) (*tee.Evidence, error) {
	if _, ok := members["hcl_report"]; ok {
		kind := tee.AzureSNP
		if _, ok := members["td_quote"]; ok {
			kind = tee.AzureTDX
		}
		if _, err := attest.ParseAzureEvidence(raw); err != nil {
			return nil, err
		}
		return &tee.Evidence{TEE: kind, Report: append([]byte(nil), raw...)}, nil
	}
	if _, ok := members["quote"]; ok {
		var aa struct {
			Quote      []byte  `json:"quote"`
			CCEventLog *string `json:"cc_eventlog"`
			AAEventLog *string `json:"aa_eventlog"`
		}
		if err := decodeStrict(bytes.NewReader(raw), &aa); err != nil {
			return nil, fmt.Errorf("TDX evidence: %w", err)
		}
		if len(aa.Quote) < 8 {
			return nil, errors.New(`quote evidence: "quote" is too short to be a quote`)
		}
		// The quote header's TEE type: 0 for SGX, 0x81 for TDX.
		if binary.LittleEndian.Uint32(aa.Quote[4:]) == 0 {
			if aa.CCEventLog != nil || aa.AAEventLog != nil {
				return nil, errors.New("SGX evidence: an SGX quote comes without event logs")
			}
			return &tee.Evidence{TEE: tee.SGX, Report: aa.Quote}, nil
		}
		return &tee.Evidence{TEE: tee.TDX, Report: aa.Quote}, nil
	}
	return tee.ParseEvidence(raw)
}

// CheckJWK accepts public EC (P-256, P-384, P-521) and RSA (>= 2048 bits)
// keys.
func CheckJWK(m map[string]any) error {
	if m == nil {
		return errors.New("missing")
	}
	b, _ := json.Marshal(m)
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("not a JWK: %w", err)
	}
	if !k.IsPublic() {
		return errors.New("must be a public key")
	}
	if !k.Valid() {
		return errors.New("not a valid key")
	}
	if pk, ok := k.Key.(interface{ Size() int }); ok && pk.Size() < 256 {
		return errors.New("RSA keys must have at least 2048 bits")
	}
	return nil
}

func (s *Server) attest(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("kbs-session-id")
	if err != nil {
		fail(w, ErrAttestation, "no kbs-session-id cookie: call POST /kbs/v0/auth first")
		return
	}
	at, err := ParseAttest(r.Body)
	if err != nil {
		bodyFail(w, ErrAttestation, err)
		return
	}
	a, ev := at.Request, at.Evidence
	sess, tok, err := s.sessions.ConsumeNonce(r.Context(), c.Value, a.RuntimeData.Nonce)
	if err != nil {
		s.audit(auditLine{Event: "attest", Verdict: "refused", Reason: err.Error()})
		fail(w, ErrAttestation, "%v", err)
		return
	}
	if tok != "" {
		// Trustee answers a repeated attest on an attested session with
		// the token it earned.
		respond(w, http.StatusOK, map[string]string{"token": tok})
		return
	}
	if at.AASNP && sess.TEE == tee.Sim {
		ev.TEE = tee.Sim // verified against the simulated chip's roots, and only with --allow-sim
	}
	if sess.TEE != ev.TEE {
		fail(w, ErrAttestation, "the session was opened for tee %q but the evidence is %q", sess.TEE, ev.TEE)
		return
	}
	binding := tee.BindKeyBroker
	structured := map[string]any{"nonce": a.RuntimeData.Nonce, "tee-pubkey": a.RuntimeData.TEEPubKey}
	if at.Composite {
		binding = sess.Binding
		structured["additional-evidence"] = at.Additional
	}
	canon, err := tee.CanonicalJSON(structured)
	if err != nil {
		fail(w, ErrAttestation, "%v", err)
		return
	}
	tok, ear, err := s.cfg.Attestation.Issue(r.Context(), ev, binding, canon, structured, a.RuntimeData.Nonce)
	if err != nil {
		if !errors.Is(err, attest.ErrVerification) {
			s.audit(auditLine{Event: "attest", Verdict: "error", Reason: "internal failure (see the service log)", TEE: string(ev.TEE)})
			s.internal(w, "attestation", err)
			return
		}
		// A verification failure is about the caller's evidence: it is
		// told what was wrong with it.
		s.audit(auditLine{Event: "attest", Verdict: "refused", Reason: err.Error(), TEE: string(ev.TEE)})
		fail(w, ErrAttestation, "%v", err)
		return
	}
	if err := s.sessions.SetToken(r.Context(), c.Value, tok); err != nil {
		s.internal(w, "record the session's token", err)
		return
	}
	s.remember(tok, ear)
	app := ear.CPU()
	s.audit(auditLine{Event: "attest", Verdict: app.Status, TEE: string(ev.TEE), Measurement: app.Evidence.Measurement, HostData: app.Evidence.HostData, Binding: string(binding)})
	respond(w, http.StatusOK, map[string]string{"token": tok})
}
