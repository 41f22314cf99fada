// Package as is cocoon's attestation service: it hands out nonces, verifies
// evidence from any TEE (package attest), appraises it against reference
// values with a Rego policy, and returns a signed EAR token (package token)
// that any relying party can check with the service's public keys.
package as

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"cocoon.dev/cocoon/internal/httpjson"
	"cocoon.dev/cocoon/internal/regoval"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"cocoon.dev/cocoon/as/maa"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/token"
)

//go:embed appraisal.rego
var defaultPolicy string

// AppraisalPolicyID names the appraisal policy in tokens
// (ear.appraisal-policy-id) and in requests' policy_ids.
const AppraisalPolicyID = "default"

// Config configures a Service.
type Config struct {
	Signer *token.Signer
	// Issuer is the service's URL (the tokens' iss).
	Issuer string
	// Verify are the verification options (offline, sim roots, cache, ...);
	// ReportData is set per request.
	Verify attest.Options
	// Reference values for the appraisal (may be replaced by the admin API).
	Reference *attest.ReferenceValues
	// AdminToken authenticates the admin API (Bearer); empty disables it.
	AdminToken string
	// NonceTTL is how long a challenge nonce is valid (default 5 minutes).
	NonceTTL time.Duration
	// Now is the nonces' clock (nil: time.Now).
	Now func() time.Time
	// Nonces keeps the challenges' nonces (nil: in this process's memory);
	// a PGNonces lets replicas share them.
	Nonces NonceStore
	// Keys is the replicas' key directory (nil: this service's keys
	// only): its JWKS lists every replica's keys, and a rotated key is
	// published there before it signs.
	Keys KeyDirectory
	// AllowNoNonce accepts requests without a nonce (for evidence captured
	// elsewhere, whose REPORT_DATA cannot bind a fresh nonce); their tokens
	// carry no eat_nonce, so relying parties see they prove no freshness.
	AllowNoNonce bool
	// Version is written into the tokens' verifier id.
	Version string
	Logger  *slog.Logger
}

// Service is the attestation service.
type Service struct {
	cfg      Config
	verifier *attest.Verifier
	nonces   NonceStore
	policy   rego.PreparedEvalQuery
	metrics  *metrics
	log      *slog.Logger

	mu   sync.RWMutex
	ref  *attest.ReferenceValues
	memo memo
}

// memo remembers appraisal results (bounded).
type memo struct {
	mu sync.Mutex
	m  map[string]token.Appraisal
}

func (m *memo) get(k string) (token.Appraisal, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.m[k]
	if ok {
		a.Policy = &token.PolicyClaims{PolicyID: a.Policy.PolicyID, Reasons: a.Policy.Reasons}
	}
	return a, ok
}

func (m *memo) put(k string, a token.Appraisal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) > 1024 {
		m.m = map[string]token.Appraisal{}
	}
	a.Evidence = nil
	m.m[k] = a
}

// New prepares a service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Signer == nil {
		return nil, errors.New("attestation service: no token signer")
	}
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	q, err := rego.New(rego.Query("data.cocoon.appraisal.result"), rego.Module("appraisal.rego", defaultPolicy)).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("appraisal policy: %w", err)
	}
	var nonces NonceStore = newNonceStore(cfg.NonceTTL, maxNonces, cfg.Now)
	if cfg.Nonces != nil {
		nonces = cfg.Nonces
	}
	svc := &Service{
		cfg: cfg, verifier: attest.NewVerifier(), nonces: nonces,
		policy: q, metrics: newMetrics(), log: cfg.Logger, ref: cfg.Reference,
	}
	if cfg.Keys != nil {
		// Published before the service answers anything it signed.
		if err := cfg.Keys.Publish(ctx, cfg.Signer.JWKS()); err != nil {
			return nil, fmt.Errorf("publish the signing keys: %w", err)
		}
		go svc.publishKeys(ctx)
	}
	return svc, nil
}

// Handler serves the service's HTTP API.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /challenge", s.challenge)
	mux.HandleFunc("POST /attestation", s.attestation)
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
	// MAA's routes: the SEV-SNP attestation and the signing keys (/certs).
	mux.HandleFunc("POST "+maa.Path, s.maaAttest)
	mux.HandleFunc("GET /certs", s.jwks)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { respond(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /metrics", s.metrics.serve)
	mux.HandleFunc("GET /admin/reference-values", s.admin(s.getReference))
	mux.HandleFunc("PUT /admin/reference-values", s.admin(s.putReference))
	mux.HandleFunc("POST /admin/rotate-key", s.admin(s.rotate))
	return s.metrics.wrap(mux)
}

var (
	respond = httpjson.Respond
	fail    = httpjson.Fail
)

func (s *Service) challenge(w http.ResponseWriter, r *http.Request) {
	n, exp, err := s.nonces.Issue(r.Context())
	if errors.Is(err, errTooManyChallenges) {
		fail(w, http.StatusServiceUnavailable, "busy", "%v; retry shortly", err)
		return
	}
	if err != nil {
		httpjson.Internal(w, s.log, "challenge", err)
		return
	}
	respond(w, http.StatusOK, map[string]string{"nonce": n, "expires_at": exp.UTC().Format(time.RFC3339)})
}

// Request is the body of POST /attestation (shaped after Trustee's
// attestation service).
type Request struct {
	TEE tee.Kind `json:"tee"`
	// Evidence is the evidence envelope (JSON), base64url.
	Evidence string `json:"evidence"`
	// Nonce is a nonce from POST /challenge; the runtime data must bind it.
	Nonce       string      `json:"nonce"`
	RuntimeData RuntimeData `json:"runtime_data"`
	// RuntimeDataHashAlgorithm: how REPORT_DATA binds the runtime data
	// (sha256, sha384 or sha512; default sha512), zero-padded to 64 bytes.
	RuntimeDataHashAlgorithm string   `json:"runtime_data_hash_algorithm,omitempty"`
	PolicyIDs                []string `json:"policy_ids,omitempty"`
}

// RuntimeData is either raw bytes (base64url; then they must be the nonce)
// or a structured object (canonical JSON; it must hold "nonce", and may
// hold "tee-pubkey" as a JWK, which the token then carries).
type RuntimeData struct {
	Raw        string         `json:"raw,omitempty"`
	Structured map[string]any `json:"structured,omitempty"`
}

// MaxRequestBytes bounds an attestation request.
const MaxRequestBytes = 1 << 20

// ParseRequest decodes an attestation request strictly.
func ParseRequest(r io.Reader, allowNoNonce bool) (*Request, error) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r, MaxRequestBytes+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	if req.Nonce == "" && !allowNoNonce {
		return nil, errors.New(`"nonce" is missing: get one from POST /challenge`)
	}
	if req.Evidence == "" {
		return nil, errors.New(`"evidence" is missing`)
	}
	if req.RuntimeData.Raw != "" && req.RuntimeData.Structured != nil {
		return nil, errors.New(`"runtime_data" takes one of "raw" and "structured", not both`)
	}
	if req.Nonce != "" && req.RuntimeData.Raw == "" && req.RuntimeData.Structured == nil {
		return nil, errors.New(`"runtime_data" must bind the nonce: give "raw" (the nonce's bytes) or "structured" (with "nonce")`)
	}
	for _, p := range req.PolicyIDs {
		if p != AppraisalPolicyID {
			return nil, fmt.Errorf("policy %q is unknown; this service has the policy %q", p, AppraisalPolicyID)
		}
	}
	return &req, nil
}

func b64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// boundData checks that the runtime data binds the nonce and returns what
// REPORT_DATA must bind under tee.BindAttestationService: the canonical
// structured runtime data, or the raw nonce's bytes.
func boundData(req *Request) ([]byte, map[string]any, error) {
	if req.RuntimeData.Raw == "" && req.RuntimeData.Structured == nil {
		return nil, nil, nil // no nonce, nothing bound (AllowNoNonce)
	}
	switch req.RuntimeDataHashAlgorithm {
	case "", "sha512":
	default:
		return nil, nil, fmt.Errorf("runtime_data_hash_algorithm %q: this service accepts only its own binding, SHA-512 over %q, NUL and the runtime data (docs/attestation.md, REPORT_DATA bindings)", req.RuntimeDataHashAlgorithm, tee.BindAttestationService)
	}
	if req.RuntimeData.Structured != nil {
		if n, _ := req.RuntimeData.Structured["nonce"].(string); n != req.Nonce {
			return nil, nil, fmt.Errorf(`runtime_data.structured.nonce is %q, expected the request's nonce %q`, n, req.Nonce)
		}
		c, err := tee.CanonicalJSON(req.RuntimeData.Structured)
		if err != nil {
			return nil, nil, err
		}
		return c, req.RuntimeData.Structured, nil
	}
	raw, err := b64(req.RuntimeData.Raw)
	if err != nil {
		return nil, nil, fmt.Errorf("runtime_data.raw is not base64url: %w", err)
	}
	nonce, err := b64(req.Nonce)
	if err != nil || subtle.ConstantTimeCompare(raw, nonce) != 1 {
		return nil, nil, errors.New("runtime_data.raw must be the nonce's bytes (or use runtime_data.structured with a nonce)")
	}
	return raw, nil, nil
}

func (s *Service) attestation(w http.ResponseWriter, r *http.Request) {
	req, err := ParseRequest(r.Body, s.cfg.AllowNoNonce)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	if req.Nonce != "" {
		ok, err := s.nonces.Consume(r.Context(), req.Nonce)
		if err != nil {
			httpjson.Internal(w, s.log, "attestation", err)
			return
		}
		if !ok {
			s.metrics.verdict("refused")
			fail(w, http.StatusUnauthorized, "bad_nonce", "the nonce is unknown, already used or expired; get a fresh one from POST /challenge")
			return
		}
	}
	bound, structured, err := boundData(req)
	if err != nil {
		s.metrics.verdict("refused")
		fail(w, http.StatusBadRequest, "unbound_runtime_data", "%v", err)
		return
	}
	raw, err := b64(req.Evidence)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_evidence", "evidence is not base64url: %v", err)
		return
	}
	ev, err := tee.ParseEvidence(raw)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_evidence", "%v", err)
		return
	}
	if req.TEE != "" && req.TEE != ev.TEE {
		fail(w, http.StatusBadRequest, "bad_evidence", "the request says tee %q but the evidence is %q", req.TEE, ev.TEE)
		return
	}
	tok, ear, err := s.Issue(r.Context(), ev, tee.BindAttestationService, bound, structured, req.Nonce)
	switch {
	case errors.Is(err, attest.ErrVerification):
		s.metrics.verdict("refused")
		s.log.Info("evidence refused", "tee", ev.TEE, "error", err)
		fail(w, http.StatusForbidden, "verification_failed", "%v", err)
		return
	case errors.Is(err, errBadKey):
		fail(w, http.StatusBadRequest, "bad_runtime_data", "%v", err)
		return
	case err != nil:
		httpjson.Internal(w, s.log, "attestation", err)
		return
	}
	app := ear.CPU()
	s.metrics.verdict(app.Status)
	respond(w, http.StatusOK, map[string]string{"token": tok, "status": app.Status})
}

var errBadKey = errors.New("runtime_data.structured.tee-pubkey is not a valid JWK")

// Issue verifies evidence whose REPORT_DATA must bind data under b (nil
// data: not checked), appraises it and signs a token carrying nonce and,
// when the structured runtime data has one, the TEE's public key.
// Verification failures wrap attest.ErrVerification; evidence made for
// another consumer (a host's challenge, say) is one of them.
func (s *Service) Issue(ctx context.Context, ev *tee.Evidence, b tee.Binding, data []byte, structured map[string]any, nonce string) (string, *token.EAR, error) {
	e := *ev
	if data == nil {
		e.RuntimeData = nil // nothing bound (AllowNoNonce)
	}
	o := s.cfg.Verify
	o.Binding, o.BoundData = b, data
	o.Reference = nil // appraisal, not verification, judges reference values
	o.AllowDebug = true
	claims, err := s.verifier.Verify(ctx, &e, o)
	if err != nil {
		return "", nil, err
	}
	app, err := s.appraise(ctx, claims)
	if err != nil {
		return "", nil, err
	}
	if data != nil {
		app.Policy.Binding = string(b)
	}
	if structured != nil {
		app.Policy.RuntimeData = structured
		if k, ok := structured["tee-pubkey"].(map[string]any); ok {
			ka, err := token.NewKeyAttestation(k)
			if err != nil {
				return "", nil, fmt.Errorf("%w: %v", errBadKey, err)
			}
			app.KeyAttestation = ka
		}
	}
	now := time.Now()
	ear := &token.EAR{
		Profile: token.Profile, IssuedAt: now.Unix(), Expiry: now.Add(s.cfg.Signer.TTL()).Unix(),
		Issuer: s.cfg.Issuer, Nonce: nonce,
		VerifierID: token.VerifierID{Developer: "cocoon", Build: s.cfg.Version},
		Submods:    map[string]token.Appraisal{"cpu0": *app},
	}
	tok, err := s.cfg.Signer.Sign(ear)
	if err != nil {
		return "", nil, err
	}
	return tok, ear, nil
}

// appraisalKey is what an appraisal depends on: the claims without the
// per-request REPORT_DATA and report id, and the reference values.
func appraisalKey(c *attest.Claims, ref *attest.ReferenceValues) string {
	cc := *c
	cc.ReportData = ""
	if c.SNP != nil {
		snp := *c.SNP
		snp.ReportID = ""
		cc.SNP = &snp
	}
	if c.Azure != nil {
		// The nonce and the paravisor's runtime data (its user-data
		// carries the nonce) change with every request.
		az := *c.Azure
		az.Nonce, az.RuntimeData = "", nil
		cc.Azure = &az
	}
	b, _ := json.Marshal(struct {
		C *attest.Claims
		R *attest.ReferenceValues
	}{&cc, ref})
	return string(b)
}

// Appraise runs the appraisal policy on verified claims. Results are
// memoized: the policy is a pure function of the claims and references.
func (s *Service) appraise(ctx context.Context, c *attest.Claims) (*token.Appraisal, error) {
	s.mu.RLock()
	ref := s.ref
	s.mu.RUnlock()
	key := appraisalKey(c, ref)
	if app, ok := s.memo.get(key); ok {
		app.Evidence = c
		return &app, nil
	}
	app, err := s.evalAppraisal(ctx, c, ref)
	if err != nil {
		return nil, err
	}
	s.memo.put(key, *app)
	return app, nil
}

func (s *Service) evalAppraisal(ctx context.Context, c *attest.Claims, ref *attest.ReferenceValues) (*token.Appraisal, error) {
	in := map[string]any{"claims": regoval.Plain(c)}
	if ref != nil {
		in["reference_values"] = regoval.Plain(refForPolicy(ref))
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		return nil, err
	}
	rs, err := s.policy.Eval(ctx, rego.EvalParsedInput(v))
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, errors.New("the appraisal policy gave no result")
	}
	b, _ := json.Marshal(rs[0].Expressions[0].Value)
	var res struct {
		Status  string            `json:"status"`
		Vector  token.TrustVector `json:"vector"`
		Reasons []string          `json:"reasons"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("appraisal result: %w", err)
	}
	if res.Reasons == nil {
		res.Reasons = []string{}
	}
	return &token.Appraisal{Status: res.Status, Vector: res.Vector, Evidence: c, PolicyID: AppraisalPolicyID,
		Policy: &token.PolicyClaims{PolicyID: AppraisalPolicyID, Reasons: res.Reasons}}, nil
}

// refForPolicy flattens reference values for the Rego input.
func refForPolicy(r *attest.ReferenceValues) map[string]any {
	m := map[string]any{"measurements": r.Measurements, "host_data": r.HostData, "allow_debug": r.AllowDebug, "tees": r.TEEs}
	if r.MinTCB != nil {
		m["min_tcb"] = map[string]any{"bootloader": r.MinTCB.Bootloader, "tee": r.MinTCB.TEE, "snp": r.MinTCB.SNP, "microcode": r.MinTCB.Microcode}
	}
	if len(r.PCRs) > 0 {
		pcrs := map[string]any{}
		for i, l := range r.PCRs {
			pcrs[strconv.Itoa(i)] = l
		}
		m["pcrs"] = pcrs
	}
	if x := r.SGX; x != nil {
		sgx := map[string]any{"mrenclave": x.MRENCLAVE, "mrsigner": x.MRSIGNER, "min_isv_svn": x.MinISVSVN}
		if x.ISVProdID != nil {
			sgx["isv_prod_id"] = *x.ISVProdID
		}
		m["sgx"] = sgx
	}
	return m
}

// KeyDirectory is where replicas publish their public signing keys.
type KeyDirectory interface {
	Publish(ctx context.Context, set jose.JSONWebKeySet) error
	// Published returns the keys published since since.
	Published(ctx context.Context, since time.Time) (jose.JSONWebKeySet, error)
}

// keyRepublish is how often a replica publishes its keys again (their
// "seen" time); a key not published for keyForget is no longer served.
const (
	keyRepublish = time.Minute
	keyForget    = time.Hour
)

// publishKeys publishes the signer's keys now and every keyRepublish
// until ctx ends.
func (s *Service) publishKeys(ctx context.Context) {
	for {
		if err := s.cfg.Keys.Publish(ctx, s.cfg.Signer.JWKS()); errors.Is(err, ErrClosed) {
			return
		} else if err != nil && ctx.Err() == nil {
			s.log.Error("publish the signing keys", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(keyRepublish):
		}
	}
}

func (s *Service) jwks(w http.ResponseWriter, r *http.Request) {
	set := s.cfg.Signer.JWKS()
	if s.cfg.Keys != nil {
		others, err := s.cfg.Keys.Published(r.Context(), time.Now().Add(-keyForget))
		if err != nil {
			// This replica's own keys still verify its tokens; the
			// others' are missing until the directory answers again
			// (a token of theirs fails to verify: closed, not open).
			s.log.Warn("the key directory cannot be read; serving this replica's keys alone", "error", err)
		}
		have := map[string]bool{}
		for _, k := range set.Keys {
			have[k.KeyID] = true
		}
		for _, k := range others.Keys {
			if !have[k.KeyID] {
				set.Keys = append(set.Keys, k)
				have[k.KeyID] = true
			}
		}
	}
	respond(w, http.StatusOK, set)
}

func (s *Service) discovery(w http.ResponseWriter, _ *http.Request) {
	respond(w, http.StatusOK, map[string]any{
		"issuer": s.cfg.Issuer, "jwks_uri": strings.TrimRight(s.cfg.Issuer, "/") + "/.well-known/jwks.json",
		"id_token_signing_alg_values_supported": []string{"ES256", "ES384"},
		"claims_supported":                      []string{"eat_profile", "eat_nonce", "iat", "exp", "iss", "ear.verifier-id", "submods"},
	})
}

// admin authenticates the admin API with the bearer token.
func (s *Service) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if s.cfg.AdminToken == "" || !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) != 1 {
			fail(w, http.StatusUnauthorized, "unauthorized", "the admin API needs the admin token (STATE/admin-token) as a Bearer token")
			return
		}
		h(w, r)
	}
}

func (s *Service) getReference(w http.ResponseWriter, _ *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ref == nil {
		respond(w, http.StatusOK, attest.ReferenceValues{})
		return
	}
	respond(w, http.StatusOK, s.ref)
}

func (s *Service) putReference(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	rv, err := attest.ParseReferenceValues(b)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_reference_values", "%v", err)
		return
	}
	s.mu.Lock()
	s.ref = rv
	s.mu.Unlock()
	s.log.Info("reference values replaced", "measurements", len(rv.Measurements), "host_data", len(rv.HostData))
	respond(w, http.StatusOK, rv)
}

func (s *Service) rotate(w http.ResponseWriter, r *http.Request) {
	var publish func(jose.JSONWebKeySet) error
	if s.cfg.Keys != nil {
		publish = func(set jose.JSONWebKeySet) error { return s.cfg.Keys.Publish(r.Context(), set) }
	}
	if err := s.cfg.Signer.RotateWith(publish); err != nil {
		httpjson.Internal(w, s.log, "key rotation", err)
		return
	}
	respond(w, http.StatusOK, map[string]string{"kid": s.cfg.Signer.KeyID()})
}
