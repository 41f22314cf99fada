package kbs

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"cocoon.dev/cocoon/tee"
)

type session struct {
	tee       tee.Kind
	binding   tee.Binding // the composite evidence's binding
	nonce     string
	nonceUsed bool
	token     string
	expires   time.Time
}

// SessionStore keeps the KBS protocol's sessions: a nonce used once, then
// the token the attestation earned, all expiring. The in-memory one serves
// one broker; PGSessions lets any replica serve any step.
type SessionStore interface {
	// Create opens a session and returns its id and nonce.
	Create(ctx context.Context, kind tee.Kind, binding tee.Binding) (id, nonce string, err error)
	// ConsumeNonce checks the session's nonce and uses it, once across
	// everything sharing the store. A session that already earned a token
	// answers with it instead (as Trustee does); one whose nonce was used by
	// an attestation that failed does not take another.
	ConsumeNonce(ctx context.Context, id, nonce string) (*Session, string, error)
	// SetToken records the token the session earned.
	SetToken(ctx context.Context, id, tok string) error
	// Token is the token the session earned.
	Token(ctx context.Context, id string) (string, error)
	// Count is how many sessions are open (metrics).
	Count(ctx context.Context) int
}

// Session is what an attestation needs of its session.
type Session struct {
	TEE     tee.Kind
	Binding tee.Binding // the composite evidence's binding
}

// Errors of sessions, the same from every SessionStore.
var (
	errUnknownSession = errors.New("unknown session: call POST /kbs/v0/auth again")
	errExpiredSession = errors.New("the session expired: call POST /kbs/v0/auth again")
	errNonceUsed      = errors.New("the session's nonce was already used: call POST /kbs/v0/auth for a new one")
	errWrongNonce     = errors.New("runtime-data.nonce is not this session's nonce")
	errNotAttested    = errors.New("the session has not attested: call POST /kbs/v0/attest")
	errTooMany        = errors.New("too many open sessions; retry shortly")
)

// sessions are the in-memory SessionStore.
type sessions struct {
	ttl     time.Duration
	now     func() time.Time
	mu      sync.Mutex
	m       map[string]*session
	created int
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	if now == nil {
		now = time.Now
	}
	return &sessions{ttl: ttl, now: now, m: map[string]*session{}}
}

const maxSessions = 1 << 20

func rand32() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Create implements SessionStore.
func (s *sessions) Create(_ context.Context, kind tee.Kind, binding tee.Binding) (string, string, error) {
	id, nonce := rand32(), rand32()
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Sweep expired sessions now and then (amortized), and always when full.
	if s.created++; s.created%1024 == 0 || len(s.m) >= maxSessions {
		for k, v := range s.m {
			if now.After(v.expires) {
				delete(s.m, k)
			}
		}
		if len(s.m) >= maxSessions {
			return "", "", errTooMany
		}
	}
	s.m[id] = &session{tee: kind, binding: binding, nonce: nonce, expires: now.Add(s.ttl)}
	return id, nonce, nil
}

func (s *sessions) get(id string) (*session, error) {
	v, ok := s.m[id]
	if !ok {
		return nil, errUnknownSession
	}
	if s.now().After(v.expires) {
		delete(s.m, id)
		return nil, errExpiredSession
	}
	return v, nil
}

// ConsumeNonce implements SessionStore.
func (s *sessions) ConsumeNonce(_ context.Context, id, nonce string) (*Session, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.get(id)
	if err != nil {
		return nil, "", err
	}
	if tok, err := nonceVerdict(v.token, v.nonceUsed, v.nonce, nonce); tok != "" || err != nil {
		return nil, tok, err
	}
	v.nonceUsed = true
	return &Session{TEE: v.tee, Binding: v.binding}, "", nil
}

// nonceVerdict is every store's rule for an attestation's nonce: a session
// that earned a token answers it; a used nonce or another one is refused;
// otherwise ("", nil) the nonce is to be used now.
func nonceVerdict(token string, used bool, want, got string) (string, error) {
	switch {
	case token != "":
		return token, nil
	case used:
		return "", errNonceUsed
	case subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1:
		return "", errWrongNonce
	}
	return "", nil
}

// SetToken implements SessionStore.
func (s *sessions) SetToken(_ context.Context, id, tok string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[id]; ok {
		v.token = tok
	}
	return nil
}

// Token implements SessionStore.
func (s *sessions) Token(_ context.Context, id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.get(id)
	if err != nil {
		return "", err
	}
	if v.token == "" {
		return "", errNotAttested
	}
	return v.token, nil
}

// Count implements SessionStore.
func (s *sessions) Count(context.Context) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
