package kbs

import (
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

// sessions are the KBS protocol's sessions: a nonce used once, then the
// token the attestation earned, all expiring.
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

func (s *sessions) create(kind tee.Kind, binding tee.Binding) (string, string, error) {
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
			return "", "", errors.New("too many open sessions; retry shortly")
		}
	}
	s.m[id] = &session{tee: kind, binding: binding, nonce: nonce, expires: now.Add(s.ttl)}
	return id, nonce, nil
}

func (s *sessions) get(id string) (*session, error) {
	v, ok := s.m[id]
	if !ok {
		return nil, errors.New("unknown session: call POST /kbs/v0/auth again")
	}
	if s.now().After(v.expires) {
		delete(s.m, id)
		return nil, errors.New("the session expired: call POST /kbs/v0/auth again")
	}
	return v, nil
}

// consumeNonce checks the session's nonce and uses it. A session that
// already earned a token answers with it (as Trustee does); one whose
// nonce was used by an attestation that failed does not take another.
func (s *sessions) consumeNonce(id, nonce string) (*session, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.get(id)
	if err != nil {
		return nil, "", err
	}
	if v.token != "" {
		return nil, v.token, nil
	}
	if v.nonceUsed {
		return nil, "", errors.New("the session's nonce was already used: call POST /kbs/v0/auth for a new one")
	}
	if subtle.ConstantTimeCompare([]byte(v.nonce), []byte(nonce)) != 1 {
		return nil, "", errors.New("runtime-data.nonce is not this session's nonce")
	}
	v.nonceUsed = true
	c := *v
	return &c, "", nil
}

func (s *sessions) setToken(id, tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[id]; ok {
		v.token = tok
	}
}

func (s *sessions) token(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.get(id)
	if err != nil {
		return "", err
	}
	if v.token == "" {
		return "", errors.New("the session has not attested: call POST /kbs/v0/attest")
	}
	return v.token, nil
}

func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
