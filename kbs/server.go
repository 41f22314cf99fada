package kbs

import (
	"context"
	"crypto"
	"crypto/ed25519"
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

	"cocoon.dev/cocoon/as"
	"cocoon.dev/cocoon/internal/httpjson"
	"cocoon.dev/cocoon/kbs/protocol"
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
	// AdminKey verifies admin requests (Bearer JWT signed with Ed25519)
	// when AdminKeys is nil.
	AdminKey ed25519.PublicKey
	// AdminKeys keeps the admin keys for every replica (nil: AdminKey
	// alone).
	AdminKeys AdminKeyStore
	// AllowSim makes the default policy accept the simulated TEE.
	AllowSim bool
	// Audit receives one JSON line per decision.
	Audit io.Writer
	// AuditLog, when set, serves the newest audit lines to the admin API
	// (GET /kbs/v0/admin/audit): the replicas' shared log.
	AuditLog       AuditReader
	SessionTTL     time.Duration
	MaxBody        int64
	ReleasePolicy  string
	Logger         *slog.Logger
	OnPolicyChange func(text string) error
	// Now is the sessions' clock (nil: time.Now).
	Now func() time.Time
	// Sessions keeps the protocol's sessions (nil: in this process's
	// memory); a PGSessions lets replicas share them.
	Sessions SessionStore
	// Policies keeps the release policy for every replica (nil: this
	// process's, with OnPolicyChange); the server follows its changes
	// while ctx given to NewServer lives. The stored policy wins over
	// ReleasePolicy, which seeds an empty store.
	Policies PolicyStore
}

// Server is the key broker.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sessions SessionStore
	auditMu  sync.Mutex

	mu     sync.RWMutex
	policy *releasePolicy
	// policyVer is the stored version of policy (with Config.Policies):
	// only a newer one replaces it.
	policyVer int64

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
	// pub is the token's TEE key, parsed on first use.
	pub crypto.PublicKey
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
	if cfg.AdminKeys == nil {
		cfg.AdminKeys = StaticAdminKeys{Key: cfg.AdminKey}
	}
	text := cfg.ReleasePolicy
	var version int64
	seed := false
	if cfg.Policies != nil {
		stored, v, err := cfg.Policies.ReleasePolicy(ctx)
		if err != nil {
			return nil, fmt.Errorf("kbs: read the release policy: %w", err)
		}
		if stored != "" {
			text, version = stored, v
		} else {
			// An empty database takes this replica's policy (once it
			// compiles), so that every replica follows one.
			seed = text != ""
		}
	}
	if text == "" {
		text = DefaultReleasePolicy
	}
	p, err := compileReleasePolicy(ctx, text, cfg.AllowSim)
	if err != nil {
		return nil, err
	}
	if seed {
		if version, err = cfg.Policies.SetReleasePolicy(ctx, text); err != nil {
			return nil, fmt.Errorf("kbs: store the release policy: %w", err)
		}
	}
	ss := cfg.Sessions
	if ss == nil {
		ss = newSessions(cfg.SessionTTL, cfg.Now)
	}
	srv := &Server{cfg: cfg, log: cfg.Logger, sessions: ss, policy: p, policyVer: version}
	if cfg.Policies != nil {
		go srv.followPolicy(ctx, version)
	}
	return srv, nil
}

// policyRecheck is how often a replica looks at the stored policy when it
// was not told of a change.
const policyRecheck = 5 * time.Second

// followPolicy swaps in the stored release policy whenever its version
// changes, until ctx ends.
func (s *Server) followPolicy(ctx context.Context, have int64) {
	for ctx.Err() == nil {
		if err := s.cfg.Policies.WaitPolicyChange(ctx, policyRecheck); err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrStoreClosed) {
				return
			}
			s.log.Warn("release policy: waiting for changes failed; looking again shortly", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(policyRecheck):
			}
		}
		text, ver, err := s.cfg.Policies.ReleasePolicy(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("release policy: the stored one cannot be read; keeping the current one", "err", err)
			}
			continue
		}
		if ver == have || text == "" {
			continue
		}
		p, err := compileReleasePolicy(ctx, text, s.cfg.AllowSim)
		have = ver
		if err != nil {
			s.log.Error("release policy: the stored version does not compile; keeping the current one", "version", ver, "err", err)
			continue
		}
		if s.applyPolicy(p, ver) {
			s.log.Info("release policy: now the stored version", "version", ver)
		}
	}
}

// applyPolicy makes p the release policy unless a newer stored version is
// already in force (two admins setting policies on two replicas at once end
// with the one the store ordered last, everywhere).
func (s *Server) applyPolicy(p *releasePolicy, ver int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Policies != nil && ver <= s.policyVer {
		return false
	}
	s.policy, s.policyVer = p, ver
	return true
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
	mux.HandleFunc("GET /kbs/v0/admin/versions/{repo}/{type}/{tag}", s.admin(s.listVersions))
	mux.HandleFunc("POST /kbs/v0/admin/reseal", s.admin(s.reseal))
	mux.HandleFunc("GET /kbs/v0/admin/audit", s.admin(s.auditTail))
	mux.HandleFunc("POST /kbs/v0/admin/versions/{repo}/{type}/{tag}/{version}/disable", s.admin(s.setDisabled(true)))
	mux.HandleFunc("POST /kbs/v0/admin/versions/{repo}/{type}/{tag}/{version}/enable", s.admin(s.setDisabled(false)))
	mux.HandleFunc("GET /kbs/v0/admin/keys", s.admin(s.listAdminKeys))
	mux.HandleFunc("POST /kbs/v0/admin/keys", s.admin(s.addAdminKey))
	mux.HandleFunc("DELETE /kbs/v0/admin/keys/{name}", s.admin(s.removeAdminKey))
	mux.HandleFunc("GET /kbs/v0/resource-policy", s.admin(s.getPolicy))
	mux.HandleFunc("POST /kbs/v0/resource-policy", s.admin(s.setPolicy))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { respond(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /metrics", s.metrics)
	// The token's signing keys, for relying parties (the tokens' JWS
	// headers also carry the key as "jwk").
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) { respond(w, http.StatusOK, s.cfg.Signer.JWKS()) })
	mux.HandleFunc("GET /kbs/v0/jwks", func(w http.ResponseWriter, _ *http.Request) { respond(w, http.StatusOK, s.cfg.Signer.JWKS()) })
	// Every other route answers a JSON problem too, as Trustee does: a
	// /kbs/v0/<plugin> it does not serve is PluginNotFound.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/kbs/v0/"); ok {
			plugin, _, _ := strings.Cut(rest, "/")
			fail(w, ErrPluginNotFound, "Plugin %s not found (%s %s is not a route of this broker)", plugin, r.Method, r.URL.Path)
			return
		}
		fail(w, ErrInvalidPath, "Request path %s is invalid: the broker serves /kbs/v0/..., /healthz, /metrics and /.well-known/jwks.json", r.URL.Path)
	})
	return http.MaxBytesHandler(mux, s.cfg.MaxBody)
}

// Error is the JSON error body: a type and a detail that says what to do.
type Error = httpjson.Error

var respond = httpjson.Respond

var errNoToken = errors.New("no attestation token")

// claimsOf finds the caller's verified token: the session's, or a bearer
// token signed by the broker or a trusted attestation service.
func (s *Server) claimsOf(r *http.Request) (map[string]any, *token.EAR, string, error) {
	raw := ""
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		raw = b
	} else if c, err := r.Cookie("kbs-session-id"); err == nil {
		raw, err = s.sessions.Token(r.Context(), c.Value)
		if err != nil {
			return nil, nil, "", fmt.Errorf("%w: %w", errNoToken, err)
		}
	} else {
		return nil, nil, "", fmt.Errorf("%w: no session cookie or bearer token; attest first (POST /kbs/v0/auth, /kbs/v0/attest)", errNoToken)
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

// resourceOf is the resource path a route names, or false after answering
// why it is not one.
func resourceOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	path, err := protocol.ResourcePath(r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag"))
	if err != nil {
		fail(w, ErrInvalidPath, "%v", err)
		return "", false
	}
	return path, true
}

// versionParam reads ?version=N (0 when absent: the newest enabled one).
func versionParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("version")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("version %q: give a version number from 1, or none for the newest enabled one", v)
	}
	return n, nil
}

func (s *Server) getResource(w http.ResponseWriter, r *http.Request) {
	repo, typ, tag := r.PathValue("repo"), r.PathValue("type"), r.PathValue("tag")
	path, err := protocol.ResourcePath(repo, typ, tag)
	if err != nil {
		fail(w, ErrInvalidPath, "%v", err)
		return
	}
	pinned, err := versionParam(r)
	if err != nil {
		fail(w, ErrInvalidPath, "%v", err)
		return
	}
	claims, ear, raw, err := s.claimsOf(r)
	if err != nil {
		s.audit(auditLine{Event: "resource", Resource: path, Verdict: "refused", Reason: err.Error()})
		typ := ErrTokenVerifier
		if errors.Is(err, errNoToken) {
			typ = ErrTokenNotFound
		}
		fail(w, typ, "%v", err)
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
		s.internal(w, "the release policy", err)
		return
	}
	if !allow {
		line.Verdict, line.Reason = "denied", strings.Join(reasons, "; ")
		if line.Reason == "" {
			line.Reason = "the release policy does not allow it"
		}
		s.audit(line)
		fail(w, ErrPolicyDeny, "the release policy refuses %s: %s", path, line.Reason)
		return
	}
	if cpu.KeyAttestation == nil {
		line.Verdict, line.Reason = "refused", "the token carries no TEE public key"
		s.audit(line)
		fail(w, ErrJwe, "the token carries no TEE public key to encrypt the resource to; attest with runtime-data.tee-pubkey")
		return
	}
	// The key first: a one-shot version is spent only on a response that
	// can be made.
	pub, err := s.teeKeyOf(raw, cpu.KeyAttestation)
	if err == nil {
		err = jweKeyOK(pub)
	}
	if err != nil {
		line.Verdict, line.Reason = "refused", "the token's TEE key cannot be encrypted to"
		s.audit(line)
		fail(w, ErrJwe, "the token's TEE key cannot be encrypted to: %v", err)
		return
	}
	data, version, err := s.cfg.Store.Release(r.Context(), path, pinned)
	line.Version = version
	switch {
	case errors.Is(err, ErrNotFound):
		line.Verdict, line.Reason = "not_found", "no such resource"
		s.audit(line)
		fail(w, ErrResourceNotFound, "no resource %s%s (or it is disabled)", path, versionSuffix(pinned))
		return
	case errors.Is(err, ErrReleased):
		line.Verdict, line.Reason = "denied", "a one-shot version, released already"
		s.audit(line)
		fail(w, ErrPolicyDeny, "%s version %d is a one-shot release and was released already; the admin puts a new version to release it again", path, version)
		return
	case err != nil:
		line.Verdict, line.Reason = "error", "the store failed (see the service log)"
		s.audit(line)
		s.internal(w, "reading the resource", err)
		return
	}
	jwe, err := sealJWE(pub, data)
	clear(data)
	if err != nil {
		line.Verdict, line.Reason = "error", "the response could not be encrypted (see the service log)"
		s.audit(line)
		s.internal(w, "encrypting the resource", err)
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

// teeKeyOf returns the (cached) TEE public key of a token.
func (s *Server) teeKeyOf(raw string, ka *token.KeyAttestation) (crypto.PublicKey, error) {
	s.tokMu.Lock()
	v, ok := s.verified[raw]
	s.tokMu.Unlock()
	if ok && v.pub != nil {
		return v.pub, nil
	}
	pub, err := ka.Key()
	if err != nil {
		return nil, fmt.Errorf("TEE public key: %w", err)
	}
	if ok {
		s.tokMu.Lock()
		if cur, still := s.verified[raw]; still {
			cur.pub = pub
			s.verified[raw] = cur
		}
		s.tokMu.Unlock()
	}
	return pub, nil
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
	Binding     string `json:"binding,omitempty"`
	Version     int    `json:"version,omitempty"`
	OneShot     bool   `json:"one_shot,omitempty"`
}

func (s *Server) audit(l auditLine) {
	l.Time = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(l)
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	if _, err := s.cfg.Audit.Write(append(b, '\n')); err != nil {
		s.log.Error("audit log: a line was not written", "event", l.Event, "resource", l.Resource, "verdict", l.Verdict, "err", err)
	}
}

// AuditReader serves the newest lines of an audit log.
type AuditReader interface {
	Tail(ctx context.Context, n int) ([]json.RawMessage, error)
}

// maxAuditTail bounds what one admin request reads.
const maxAuditTail = 10000

func (s *Server) auditTail(w http.ResponseWriter, r *http.Request) {
	if s.cfg.AuditLog == nil {
		fail(w, ErrInvalidPath, "this broker keeps its audit log in a file of its state directory, not in a shared store")
		return
	}
	n := 100
	if v := r.URL.Query().Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > maxAuditTail {
			fail(w, ErrInvalidPath, "n %q: give a number of lines from 1 to %d", v, maxAuditTail)
			return
		}
	}
	lines, err := s.cfg.AuditLog.Tail(r.Context(), n)
	if err != nil {
		s.internal(w, "reading the audit log", err)
		return
	}
	if lines == nil {
		lines = []json.RawMessage{}
	}
	respond(w, http.StatusOK, map[string]any{"lines": lines})
}

func (s *Server) putResource(w http.ResponseWriter, r *http.Request) {
	path, ok := resourceOf(w, r)
	if !ok {
		return
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		fail(w, ErrPayloadTooLarge, "%v", err)
		return
	}
	var opt PutOptions
	switch q := r.URL.Query().Get("one-shot"); q {
	case "", "false":
	case "true":
		opt.OneShot = true
	default:
		clear(data)
		fail(w, ErrInvalidPath, "one-shot=%q: want true or false", q)
		return
	}
	if opt.RequestID, err = requestID(r.Header); err != nil {
		clear(data)
		fail(w, ErrInvalidPath, "%v", err)
		return
	}
	res, err := s.cfg.Store.Put(r.Context(), path, data, opt)
	clear(data)
	if errors.Is(err, ErrRequestReused) {
		s.audit(auditLine{Event: "admin_put", Resource: path, Verdict: "refused", Reason: "Idempotency-Key reused for another value"})
		fail(w, ErrConflict, "Idempotency-Key %q was used for a put of another value or options to %s: nothing was stored; use a fresh key for a new value", opt.RequestID, path)
		return
	}
	if err != nil {
		s.internal(w, "the store", err)
		return
	}
	verdict := "stored"
	if res.Replayed {
		verdict = "replayed"
	}
	s.audit(auditLine{Event: "admin_put", Resource: path, Verdict: verdict, Version: res.Version, OneShot: opt.OneShot})
	respond(w, http.StatusOK, protocol.PutResponse{Resource: "kbs:///" + path, Version: res.Version, OneShot: opt.OneShot, Replayed: res.Replayed})
}

// maxRequestID bounds an Idempotency-Key.
const maxRequestID = 128

// requestID reads a put's Idempotency-Key header (draft-ietf-httpapi-
// idempotency-key-header: a structured-field string, quoted; the bare
// token most clients send is taken too): at most 128 characters of
// letters, digits and "-._~:". Absent: "".
func requestID(h http.Header) (string, error) {
	vs := h.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", errors.New("more than one Idempotency-Key header: send one")
	}
	v := vs[0]
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if v == "" || len(v) > maxRequestID {
		return "", fmt.Errorf("the Idempotency-Key is %d characters: want 1 to %d", len(v), maxRequestID)
	}
	for _, c := range v {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("-._~:", c)) {
			return "", fmt.Errorf("the Idempotency-Key holds %q: use letters, digits and -._~: (a UUID, say)", c)
		}
	}
	return v, nil
}

// policyResealer is a PolicyStore whose policy is authenticated under the
// master key (PGPolicies): a rotation authenticates it again.
type policyResealer interface {
	Reseal(ctx context.Context) (bool, error)
}

// reseal seals every stored value (and the MACs of the stored release
// policy and admin keys) again under the master key: the last step of a
// master-key rotation.
func (s *Server) reseal(w http.ResponseWriter, r *http.Request) {
	rs, ok := s.cfg.Store.(Resealer)
	if !ok {
		fail(w, ErrInvalidPath, "this broker's store cannot be resealed (it implements no kbs.Resealer); move its resources to the embedded or the PostgreSQL store")
		return
	}
	res, err := rs.Reseal(r.Context())
	if err != nil {
		s.internal(w, "resealing the store", err)
		return
	}
	out := map[string]any{"values": res.Values, "resealed": res.Resealed}
	if p, ok := s.cfg.Policies.(policyResealer); ok {
		done, err := p.Reseal(r.Context())
		if err != nil {
			s.internal(w, "resealing the release policy", err)
			return
		}
		out["policy_resealed"] = done
	}
	if k, ok := s.cfg.AdminKeys.(interface {
		Reseal(context.Context) (int, error)
	}); ok {
		n, err := k.Reseal(r.Context())
		if err != nil {
			s.internal(w, "resealing the admin keys", err)
			return
		}
		out["admin_keys_resealed"] = n
	}
	s.audit(auditLine{Event: "admin_reseal", Verdict: fmt.Sprintf("resealed %d of %d", res.Resealed, res.Values)})
	respond(w, http.StatusOK, out)
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) {
	path, ok := resourceOf(w, r)
	if !ok {
		return
	}
	vs, err := s.cfg.Store.Versions(r.Context(), path)
	if errors.Is(err, ErrNotFound) {
		fail(w, ErrResourceNotFound, "no resource %s", path)
		return
	} else if err != nil {
		s.internal(w, "the store", err)
		return
	}
	respond(w, http.StatusOK, map[string]any{"resource": "kbs:///" + path, "versions": vs})
}

// setDisabled disables or enables one version (POST .../VERSION/disable,
// .../enable).
func (s *Server) setDisabled(disabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		path, ok := resourceOf(w, r)
		if !ok {
			return
		}
		v, err := strconv.Atoi(r.PathValue("version"))
		if err != nil || v < 1 {
			fail(w, ErrInvalidPath, "version %q: give a version number from 1", r.PathValue("version"))
			return
		}
		if err := s.cfg.Store.SetDisabled(r.Context(), path, v, disabled); errors.Is(err, ErrNotFound) {
			fail(w, ErrResourceNotFound, "no version %d of %s", v, path)
			return
		} else if err != nil {
			s.internal(w, "the store", err)
			return
		}
		verdict := "enabled"
		if disabled {
			verdict = "disabled"
		}
		s.audit(auditLine{Event: "admin_version", Resource: path, Verdict: verdict, Version: v})
		respond(w, http.StatusOK, map[string]any{"resource": "kbs:///" + path, "version": v, "disabled": disabled})
	}
}

func (s *Server) deleteResource(w http.ResponseWriter, r *http.Request) {
	path, ok := resourceOf(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Store.Delete(r.Context(), path); errors.Is(err, ErrNotFound) {
		fail(w, ErrResourceNotFound, "no resource %s", path)
		return
	} else if err != nil {
		s.internal(w, "the store", err)
		return
	}
	s.audit(auditLine{Event: "admin_delete", Resource: path, Verdict: "deleted"})
	respond(w, http.StatusOK, map[string]string{"deleted": "kbs:///" + path})
}

func (s *Server) adminGetResource(w http.ResponseWriter, r *http.Request) {
	path, ok := resourceOf(w, r)
	if !ok {
		return
	}
	pinned, err := versionParam(r)
	if err != nil {
		fail(w, ErrInvalidPath, "%v", err)
		return
	}
	data, version, err := s.cfg.Store.Get(r.Context(), path, pinned)
	if errors.Is(err, ErrNotFound) {
		fail(w, ErrResourceNotFound, "no resource %s%s (or it is disabled)", path, versionSuffix(pinned))
		return
	} else if err != nil {
		s.internal(w, "the store", err)
		return
	}
	s.audit(auditLine{Event: "admin_get", Resource: path, Verdict: "read", Version: version})
	w.Header().Set("Cocoon-Resource-Version", strconv.Itoa(version))
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(data)
}

func (s *Server) listResources(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Store.List(r.Context())
	if err != nil {
		s.internal(w, "the store", err)
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
		fail(w, ErrParsePolicy, `body must be {"policy": "<base64url Rego>"}: %v`, err)
		return
	}
	text, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(body.Policy, "="))
	if err != nil {
		if text, err = base64.StdEncoding.DecodeString(body.Policy); err != nil {
			fail(w, ErrParsePolicy, "policy must be base64: %v", err)
			return
		}
	}
	p, err := compileReleasePolicy(r.Context(), string(text), s.cfg.AllowSim)
	if err != nil {
		fail(w, ErrParsePolicy, "%v", err)
		return
	}
	var ver int64
	if s.cfg.Policies != nil {
		if ver, err = s.cfg.Policies.SetReleasePolicy(r.Context(), string(text)); err != nil {
			s.internal(w, "the store", err)
			return
		}
	}
	if s.cfg.OnPolicyChange != nil {
		if err := s.cfg.OnPolicyChange(string(text)); err != nil {
			s.internal(w, "the store", err)
			return
		}
	}
	s.applyPolicy(p, ver)
	s.audit(auditLine{Event: "admin_policy", Verdict: "set"})
	respond(w, http.StatusOK, map[string]string{"status": "set"})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP cocoon_kbs_sessions Open sessions.\n# TYPE cocoon_kbs_sessions gauge\ncocoon_kbs_sessions %d\n", s.sessions.Count(r.Context()))
}
