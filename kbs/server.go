package kbs

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"cocoon.dev/cocoon/as"
	"cocoon.dev/cocoon/attest"
	"cocoon.dev/cocoon/internal/httpjson"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/token"
)

// ProtocolVersion is the KBS protocol version served.
const ProtocolVersion = protocol.Version

// Config configures a Server.
type Config struct {
	Store Store
	// Attestation verifies evidence and issues tokens (background-check
	// mode); its signer's keys are the broker's token keys.
	Attestation *as.Service
	Signer      *token.Signer
	// TrustedIssuers are further token issuers (passport mode: tokens from
	// a trusted attestation service), e.g. a token.RemoteKeySet that
	// refetches the service's JWKS when it rotates its signing key.
	TrustedIssuers []token.KeySource
	// AdminKey verifies admin requests (Bearer JWT signed with Ed25519).
	AdminKey ed25519.PublicKey
	// AllowSim makes the default policy accept the simulated TEE.
	AllowSim bool
	// Audit receives one JSON line per decision.
	Audit          io.Writer
	SessionTTL     time.Duration
	MaxBody        int64
	ReleasePolicy  string
	Logger         *slog.Logger
	OnPolicyChange func(text string) error
	// Now is the sessions' clock (nil: time.Now).
	Now func() time.Time
}

// Server is the key broker.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	auditMu  sync.Mutex

	mu     sync.RWMutex
	policy *releasePolicy

	// verified caches tokens already verified, until they expire, and
	// decisions already made for a token and a resource under the current
	// policy (the release policy is a pure function of both).
	tokMu     sync.Mutex
	verified  map[string]verifiedToken
	decisions map[decisionKey]decision
}

type decisionKey struct {
	policy *releasePolicy
	token  string
	path   string
}

type decision struct {
	allow   bool
	reasons []string
}

type verifiedToken struct {
	claims map[string]any
	ear    *token.EAR
	// enc encrypts to the token's TEE key (a fresh ephemeral key per
	// message); made on first use.
	enc jose.Encrypter
}

// NewServer prepares a broker.
func NewServer(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Attestation == nil || cfg.Signer == nil {
		return nil, errors.New("kbs: Store, Attestation and Signer are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 5 * time.Minute
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Audit == nil {
		cfg.Audit = io.Discard
	}
	text := cfg.ReleasePolicy
	if text == "" {
		text = DefaultReleasePolicy
	}
	p, err := compileReleasePolicy(ctx, text, cfg.AllowSim)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger, sessions: newSessions(cfg.SessionTTL, cfg.Now), policy: p}, nil
}

// Handler serves the KBS protocol and the admin API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /kbs/v0/auth", s.auth)
	mux.HandleFunc("POST /kbs/v0/attest", s.attest)
	mux.HandleFunc("GET /kbs/v0/resource/{repo}/{type}/{tag}", s.getResource)
	mux.HandleFunc("POST /kbs/v0/resource/{repo}/{type}/{tag}", s.admin(s.putResource))
	mux.HandleFunc("PUT /kbs/v0/resource/{repo}/{type}/{tag}", s.admin(s.putResource))
	mux.HandleFunc("DELETE /kbs/v0/resource/{repo}/{type}/{tag}", s.admin(s.deleteResource))
	mux.HandleFunc("GET /kbs/v0/admin/resources", s.admin(s.listResources))
	mux.HandleFunc("GET /kbs/v0/admin/resource/{repo}/{type}/{tag}", s.admin(s.adminGetResource))
	mux.HandleFunc("GET /kbs/v0/resource-policy", s.admin(s.getPolicy))
	mux.HandleFunc("POST /kbs/v0/resource-policy", s.admin(s.setPolicy))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { respond(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /metrics", s.metrics)
	return http.MaxBytesHandler(mux, s.cfg.MaxBody)
}

// Error is the JSON error body: a type and a detail that says what to do.
type Error = httpjson.Error

var (
	respond = httpjson.Respond
	fail    = httpjson.Fail
)

func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("the body is larger than %d bytes", mbe.Limit)
		}
		return err
	}
	return nil
}

// The protocol's bodies (package protocol, which clients link alone).
type (
	AuthRequest   = protocol.AuthRequest
	Challenge     = protocol.Challenge
	AttestRequest = protocol.AttestRequest
	RuntimeData   = protocol.RuntimeData
)

// ParseAuth decodes an auth body strictly.
func ParseAuth(r io.Reader) (*AuthRequest, error) {
	var a AuthRequest
	if err := decodeStrict(r, &a); err != nil {
		return nil, fmt.Errorf("auth body: %w", err)
	}
	if a.Version == "" || !strings.HasPrefix(a.Version, "0.") {
		return nil, fmt.Errorf("auth body: protocol version %q is not supported; this broker speaks %s", a.Version, ProtocolVersion)
	}
	switch tee.Kind(a.TEE) {
	case tee.SNP, tee.TDX, tee.Sim:
	default:
		return nil, fmt.Errorf("auth body: tee %q is not supported; use snp, tdx or sim", a.TEE)
	}
	return &a, nil
}

func (s *Server) auth(w http.ResponseWriter, r *http.Request) {
	a, err := ParseAuth(r.Body)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	id, nonce, err := s.sessions.create(tee.Kind(a.TEE))
	if err != nil {
		fail(w, http.StatusServiceUnavailable, "busy", "%v", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: id, Path: "/kbs", HttpOnly: true, MaxAge: int(s.cfg.SessionTTL.Seconds())})
	respond(w, http.StatusOK, Challenge{Nonce: nonce, ExtraParams: ""})
}

// ParseAttest decodes an attest body strictly and checks the JWK.
func ParseAttest(r io.Reader) (*AttestRequest, *tee.Evidence, error) {
	var a AttestRequest
	if err := decodeStrict(r, &a); err != nil {
		return nil, nil, fmt.Errorf("attest body: %w", err)
	}
	if a.RuntimeData.Nonce == "" {
		return nil, nil, errors.New(`attest body: "runtime-data.nonce" is missing`)
	}
	if err := CheckJWK(a.RuntimeData.TEEPubKey); err != nil {
		return nil, nil, fmt.Errorf(`attest body: "runtime-data.tee-pubkey": %w`, err)
	}
	raw := []byte(a.TEEEvidence)
	var str string
	if json.Unmarshal(raw, &str) == nil {
		raw = []byte(str)
	}
	ev, err := tee.ParseEvidence(raw)
	if err != nil {
		return nil, nil, fmt.Errorf(`attest body: "tee-evidence": %w`, err)
	}
	return &a, ev, nil
}

// CheckJWK accepts public EC (P-256, P-384) and RSA (>= 2048 bits) keys.
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
	switch pk := k.Key.(type) {
	case interface{ Size() int }:
		if pk.Size() < 256 {
			return errors.New("RSA keys must have at least 2048 bits")
		}
	}
	return nil
}

func (s *Server) attest(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("kbs-session-id")
	if err != nil {
		fail(w, http.StatusUnauthorized, "no_session", "no kbs-session-id cookie: call POST /kbs/v0/auth first")
		return
	}
	a, ev, err := ParseAttest(r.Body)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	sess, err := s.sessions.consumeNonce(c.Value, a.RuntimeData.Nonce)
	if err != nil {
		s.audit(auditLine{Event: "attest", Verdict: "refused", Reason: err.Error()})
		fail(w, http.StatusUnauthorized, "bad_session", "%v", err)
		return
	}
	if sess.tee != ev.TEE {
		fail(w, http.StatusBadRequest, "bad_request", "the session was opened for tee %q but the evidence is %q", sess.tee, ev.TEE)
		return
	}
	structured := map[string]any{"nonce": a.RuntimeData.Nonce, "tee-pubkey": a.RuntimeData.TEEPubKey}
	canon, err := tee.CanonicalJSON(structured)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_request", "%v", err)
		return
	}
	tok, ear, err := s.cfg.Attestation.Issue(r.Context(), ev, tee.BindKeyBroker, canon, structured, a.RuntimeData.Nonce)
	if err != nil {
		if !errors.Is(err, attest.ErrVerification) {
			s.audit(auditLine{Event: "attest", Verdict: "error", Reason: "internal failure (see the service log)", TEE: string(ev.TEE)})
			httpjson.Internal(w, s.log, "attestation", err)
			return
		}
		// A verification failure is about the caller's evidence: it is
		// told what was wrong with it.
		s.audit(auditLine{Event: "attest", Verdict: "refused", Reason: err.Error(), TEE: string(ev.TEE)})
		fail(w, http.StatusForbidden, "attestation_failed", "%v", err)
		return
	}
	s.sessions.setToken(c.Value, tok)
	s.remember(tok, ear)
	app := ear.CPU()
	s.audit(auditLine{Event: "attest", Verdict: app.Status, TEE: string(ev.TEE), Measurement: app.Evidence.Measurement, HostData: app.Evidence.HostData})
	respond(w, http.StatusOK, map[string]string{"token": tok})
}

// claimsOf finds the caller's verified token: the session's, or a bearer
// token signed by the broker or a trusted attestation service.
func (s *Server) claimsOf(r *http.Request) (map[string]any, *token.EAR, string, error) {
	raw := ""
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		raw = b
	} else if c, err := r.Cookie("kbs-session-id"); err == nil {
		raw, err = s.sessions.token(c.Value)
		if err != nil {
			return nil, nil, "", err
		}
	} else {
		return nil, nil, "", errors.New("no session cookie or bearer token: attest first (POST /kbs/v0/auth, /kbs/v0/attest)")
	}
	s.tokMu.Lock()
	if v, ok := s.verified[raw]; ok && time.Now().Before(time.Unix(v.ear.Expiry, 0)) {
		s.tokMu.Unlock()
		return v.claims, v.ear, raw, nil
	}
	s.tokMu.Unlock()
	own := s.cfg.Signer.JWKS()
	sources := append([]token.KeySource{token.StaticKeySet{Set: &own}}, s.cfg.TrustedIssuers...)
	var lastErr error
	for _, src := range sources {
		ear, err := token.Verify(r.Context(), raw, token.VerifyOptions{Keys: src})
		if err != nil {
			lastErr = err
			continue
		}
		payload, err := jwtPayload(raw)
		if err != nil {
			return nil, nil, "", err
		}
		s.tokMu.Lock()
		if s.verified == nil || len(s.verified) > 4096 {
			s.verified = map[string]verifiedToken{}
		}
		s.verified[raw] = verifiedToken{claims: payload, ear: ear}
		s.tokMu.Unlock()
		return payload, ear, raw, nil
	}
	return nil, nil, "", fmt.Errorf("the token is not valid for this broker: %w", lastErr)
}

func jwtPayload(raw string) (map[string]any, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("malformed token")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

func (s *Server) getResource(w http.ResponseWriter, r *http.Request) {
	repo, typ, tag := r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag")
	path, err := protocol.ResourcePath(repo, typ, tag)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_path", "%v", err)
		return
	}
	claims, ear, raw, err := s.claimsOf(r)
	if err != nil {
		s.audit(auditLine{Event: "resource", Resource: path, Verdict: "refused", Reason: err.Error()})
		fail(w, http.StatusUnauthorized, "unauthenticated", "%v", err)
		return
	}
	cpu := ear.CPU()
	line := auditLine{Event: "resource", Resource: path}
	if cpu.Evidence != nil {
		line.TEE, line.Measurement, line.HostData = string(cpu.Evidence.TEE), cpu.Evidence.Measurement, cpu.Evidence.HostData
	}
	s.mu.RLock()
	pol := s.policy
	s.mu.RUnlock()
	allow, reasons, err := s.decide(r.Context(), pol, raw, claims, repo, typ, tag)
	if err != nil {
		line.Verdict, line.Reason = "error", "release policy evaluation failed (see the service log)"
		s.audit(line)
		httpjson.Internal(w, s.log, "the release policy", err)
		return
	}
	if !allow {
		line.Verdict, line.Reason = "denied", strings.Join(reasons, "; ")
		if line.Reason == "" {
			line.Reason = "the release policy does not allow it"
		}
		s.audit(line)
		fail(w, http.StatusForbidden, "denied", "the release policy refuses %s: %s", path, line.Reason)
		return
	}
	if cpu.KeyAttestation == nil {
		line.Verdict, line.Reason = "refused", "the token carries no TEE public key"
		s.audit(line)
		fail(w, http.StatusBadRequest, "no_tee_key", "the token carries no TEE public key to encrypt the resource to; attest with runtime-data.tee-pubkey")
		return
	}
	data, err := s.cfg.Store.Get(r.Context(), path)
	if errors.Is(err, ErrNotFound) {
		line.Verdict, line.Reason = "not_found", "no such resource"
		s.audit(line)
		fail(w, http.StatusNotFound, "not_found", "no resource %s", path)
		return
	}
	if err != nil {
		line.Verdict, line.Reason = "error", "the store failed (see the service log)"
		s.audit(line)
		httpjson.Internal(w, s.log, "reading the resource", err)
		return
	}
	enc, err := s.encrypterFor(raw, cpu.KeyAttestation)
	var jwe []byte
	if err == nil {
		var obj *jose.JSONWebEncryption
		if obj, err = enc.Encrypt(data); err == nil {
			jwe = []byte(obj.FullSerialize())
		}
	}
	clear(data)
	if err != nil {
		line.Verdict, line.Reason = "refused", "the token's TEE key cannot be encrypted to"
		s.audit(line)
		fail(w, http.StatusBadRequest, "no_tee_key", "the token's TEE key cannot be encrypted to: %v", err)
		return
	}
	line.Verdict = "released"
	s.audit(line)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(jwe)
}

// remember caches a token this broker just signed as verified.
func (s *Server) remember(tok string, ear *token.EAR) {
	payload, err := jwtPayload(tok)
	if err != nil {
		return
	}
	s.tokMu.Lock()
	defer s.tokMu.Unlock()
	if s.verified == nil || len(s.verified) > 4096 {
		s.verified = map[string]verifiedToken{}
	}
	s.verified[tok] = verifiedToken{claims: payload, ear: ear}
}

// decide evaluates the release policy, remembering the decision for this
// token and resource under this policy.
func (s *Server) decide(ctx context.Context, pol *releasePolicy, raw string, claims map[string]any, repo, typ, tag string) (bool, []string, error) {
	k := decisionKey{pol, raw, repo + "/" + typ + "/" + tag}
	s.tokMu.Lock()
	d, ok := s.decisions[k]
	s.tokMu.Unlock()
	if ok {
		return d.allow, d.reasons, nil
	}
	allow, reasons, err := pol.decide(ctx, claims, repo, typ, tag)
	if err != nil {
		return false, nil, err
	}
	s.tokMu.Lock()
	if s.decisions == nil || len(s.decisions) > 4096 {
		s.decisions = map[decisionKey]decision{}
	}
	s.decisions[k] = decision{allow, reasons}
	s.tokMu.Unlock()
	return allow, reasons, nil
}

// encrypterFor returns the (cached) encrypter to the TEE key of a token.
func (s *Server) encrypterFor(raw string, ka *token.KeyAttestation) (jose.Encrypter, error) {
	s.tokMu.Lock()
	v, ok := s.verified[raw]
	s.tokMu.Unlock()
	if ok && v.enc != nil {
		return v.enc, nil
	}
	jwk, err := ka.JWK()
	if err != nil {
		return nil, fmt.Errorf("TEE public key: %w", err)
	}
	enc, err := newEncrypter(jwk)
	if err != nil {
		return nil, err
	}
	if ok {
		s.tokMu.Lock()
		if cur, still := s.verified[raw]; still {
			cur.enc = enc
			s.verified[raw] = cur
		}
		s.tokMu.Unlock()
	}
	return enc, nil
}

func newEncrypter(jwk map[string]any) (jose.Encrypter, error) {
	b, _ := json.Marshal(jwk)
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("TEE public key: %w", err)
	}
	alg := jose.ECDH_ES_A256KW
	if _, ok := k.Key.(interface{ Size() int }); ok {
		alg = jose.RSA_OAEP_256
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: alg, Key: k.Key}, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypt to the TEE key: %w", err)
	}
	return enc, nil
}

// EncryptTo encrypts data to a public JWK as a flattened JWE (A256GCM;
// ECDH-ES+A256KW for EC keys, RSA-OAEP-256 for RSA keys).
func EncryptTo(jwk map[string]any, data []byte) ([]byte, error) {
	enc, err := newEncrypter(jwk)
	if err != nil {
		return nil, err
	}
	obj, err := enc.Encrypt(data)
	if err != nil {
		return nil, err
	}
	return []byte(obj.FullSerialize()), nil
}

type auditLine struct {
	Time        string `json:"time"`
	Event       string `json:"event"`
	Resource    string `json:"resource,omitempty"`
	Verdict     string `json:"verdict"`
	Reason      string `json:"reason,omitempty"`
	TEE         string `json:"tee,omitempty"`
	Measurement string `json:"measurement,omitempty"`
	HostData    string `json:"host_data,omitempty"`
}

func (s *Server) audit(l auditLine) {
	l.Time = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(l)
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	_, _ = s.cfg.Audit.Write(append(b, '\n'))
}

// admin authenticates a request with a bearer JWT signed by the admin key.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.checkAdmin(r); err != nil {
			s.audit(auditLine{Event: "admin", Resource: r.URL.Path, Verdict: "refused", Reason: err.Error()})
			fail(w, http.StatusUnauthorized, "unauthorized", "%v", err)
			return
		}
		h(w, r)
	}
}

func (s *Server) checkAdmin(r *http.Request) error {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || s.cfg.AdminKey == nil {
		return errors.New("admin requests need a bearer JWT signed by the admin key (STATE/admin.key; cocoon kbs ... --state DIR does this)")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	var c jwt.Claims
	if err := tok.Claims(s.cfg.AdminKey, &c); err != nil {
		return fmt.Errorf("admin token: not signed by the admin key: %w", err)
	}
	if c.Expiry == nil || c.Expiry.Time().After(time.Now().Add(time.Hour)) {
		return errors.New("admin token: needs an expiry within an hour")
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, time.Minute); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	return nil
}

func (s *Server) putResource(w http.ResponseWriter, r *http.Request) {
	path, err := protocol.ResourcePath(r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag"))
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_path", "%v", err)
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		fail(w, http.StatusRequestEntityTooLarge, "too_large", "%v", err)
		return
	}
	if err := s.cfg.Store.Put(r.Context(), path, data); err != nil {
		httpjson.Internal(w, s.log, "the store", err)
		return
	}
	clear(data)
	s.audit(auditLine{Event: "admin_put", Resource: path, Verdict: "stored"})
	respond(w, http.StatusOK, map[string]string{"resource": "kbs:///" + path})
}

func (s *Server) deleteResource(w http.ResponseWriter, r *http.Request) {
	path, err := protocol.ResourcePath(r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag"))
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_path", "%v", err)
		return
	}
	if err := s.cfg.Store.Delete(r.Context(), path); errors.Is(err, ErrNotFound) {
		fail(w, http.StatusNotFound, "not_found", "no resource %s", path)
		return
	} else if err != nil {
		httpjson.Internal(w, s.log, "the store", err)
		return
	}
	s.audit(auditLine{Event: "admin_delete", Resource: path, Verdict: "deleted"})
	respond(w, http.StatusOK, map[string]string{"deleted": "kbs:///" + path})
}

func (s *Server) adminGetResource(w http.ResponseWriter, r *http.Request) {
	path, err := protocol.ResourcePath(r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag"))
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_path", "%v", err)
		return
	}
	data, err := s.cfg.Store.Get(r.Context(), path)
	if errors.Is(err, ErrNotFound) {
		fail(w, http.StatusNotFound, "not_found", "no resource %s", path)
		return
	} else if err != nil {
		httpjson.Internal(w, s.log, "the store", err)
		return
	}
	s.audit(auditLine{Event: "admin_get", Resource: path, Verdict: "read"})
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func (s *Server) listResources(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Store.List(r.Context())
	if err != nil {
		httpjson.Internal(w, s.log, "the store", err)
		return
	}
	if list == nil {
		list = []string{}
	}
	respond(w, http.StatusOK, map[string]any{"resources": list})
}

func (s *Server) getPolicy(w http.ResponseWriter, _ *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, s.policy.text)
}

func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Policy string `json:"policy"`
	}
	if err := decodeStrict(r.Body, &body); err != nil {
		fail(w, http.StatusBadRequest, "bad_request", `body must be {"policy": "<base64url Rego>"}: %v`, err)
		return
	}
	text, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(body.Policy, "="))
	if err != nil {
		if text, err = base64.StdEncoding.DecodeString(body.Policy); err != nil {
			fail(w, http.StatusBadRequest, "bad_request", "policy must be base64: %v", err)
			return
		}
	}
	p, err := compileReleasePolicy(r.Context(), string(text), s.cfg.AllowSim)
	if err != nil {
		fail(w, http.StatusBadRequest, "bad_policy", "%v", err)
		return
	}
	if s.cfg.OnPolicyChange != nil {
		if err := s.cfg.OnPolicyChange(string(text)); err != nil {
			httpjson.Internal(w, s.log, "the store", err)
			return
		}
	}
	s.mu.Lock()
	s.policy = p
	s.mu.Unlock()
	s.audit(auditLine{Event: "admin_policy", Verdict: "set"})
	respond(w, http.StatusOK, map[string]string{"status": "set"})
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP cocoon_kbs_sessions Open sessions.\n# TYPE cocoon_kbs_sessions gauge\ncocoon_kbs_sessions %d\n", s.sessions.count())
}
