package kbs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"cocoon.dev/cocoon/tee"
	"github.com/jackc/pgx/v5"
)

// PGSessions keeps the protocol's sessions in PostgreSQL: a nonce is used
// once across every replica (marked in the one statement that checks it),
// and any replica serves any step of a session.
type PGSessions struct {
	p       *Postgres
	ttl     time.Duration
	now     func() time.Time
	created atomic.Int64
	full    atomic.Bool

	mu     sync.Mutex
	tokens map[string]rememberedToken // session id → its token
}

// Sessions returns the shared session store; now is the clock (nil:
// time.Now), ttl a session's life.
func (p *Postgres) Sessions(ttl time.Duration, now func() time.Time) *PGSessions {
	if now == nil {
		now = time.Now
	}
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	return &PGSessions{p: p, ttl: ttl, now: now}
}

// Create implements SessionStore.
func (s *PGSessions) Create(ctx context.Context, kind tee.Kind, binding tee.Binding) (string, string, error) {
	id, nonce := rand32(), rand32()
	now := s.now()
	// Expired sessions go, and the open ones are counted, now and then
	// (amortized over creations): auth is unauthenticated, so the table's
	// size is bounded like the in-memory store's.
	if s.created.Add(1)%1024 == 1 || s.full.Load() {
		if _, err := s.p.pool.Exec(ctx, `DELETE FROM kbs_sessions WHERE expires < $1`, now); err != nil {
			return "", "", err
		}
		var open int
		if err := s.p.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM kbs_sessions LIMIT $1) s`, maxSessions).Scan(&open); err != nil {
			return "", "", err
		}
		s.full.Store(open >= maxSessions)
	}
	if s.full.Load() {
		return "", "", errTooMany
	}
	_, err := s.p.pool.Exec(ctx, `INSERT INTO kbs_sessions (id, tee, binding, nonce, expires) VALUES ($1, $2, $3, $4, $5)`,
		id, string(kind), string(binding), nonce, now.Add(s.ttl))
	return id, nonce, err
}

type pgSession struct {
	tee, binding, nonce, token string
	used                       bool
	expires                    time.Time
}

func (s *PGSessions) load(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, id, lock string) (*pgSession, error) {
	var v pgSession
	err := q.QueryRow(ctx, `SELECT tee, binding, nonce, nonce_used, token, expires FROM kbs_sessions WHERE id = $1`+lock, id).
		Scan(&v.tee, &v.binding, &v.nonce, &v.used, &v.token, &v.expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errUnknownSession
	}
	if err != nil {
		return nil, err
	}
	if s.now().After(v.expires) {
		return nil, errExpiredSession
	}
	return &v, nil
}

// ConsumeNonce implements SessionStore. The common case is one statement:
// the nonce is marked used only in a row that is open, unattested and
// holds that nonce (a concurrent attest on another replica waits for the
// row and then finds it used). Anything else is looked at again under a
// lock to say precisely what was wrong.
func (s *PGSessions) ConsumeNonce(ctx context.Context, id, nonce string) (*Session, string, error) {
	var kind, binding string
	err := s.p.pool.QueryRow(ctx, `UPDATE kbs_sessions SET nonce_used = true
		WHERE id = $1 AND nonce = $2 AND NOT nonce_used AND token = '' AND expires >= $3
		RETURNING tee, binding`, id, nonce, s.now()).Scan(&kind, &binding)
	if err == nil {
		return &Session{TEE: tee.Kind(kind), Binding: tee.Binding(binding)}, "", nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, "", err
	}
	tx, err := s.p.pool.Begin(ctx)
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	v, err := s.load(ctx, tx, id, " FOR UPDATE")
	if err != nil {
		return nil, "", err
	}
	if tok, err := nonceVerdict(v.token, v.used, v.nonce, nonce); tok != "" || err != nil {
		return nil, tok, err
	}
	if _, err := tx.Exec(ctx, `UPDATE kbs_sessions SET nonce_used = true WHERE id = $1`, id); err != nil {
		return nil, "", err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, "", err
	}
	return &Session{TEE: tee.Kind(v.tee), Binding: tee.Binding(v.binding)}, "", nil
}

// SetToken implements SessionStore.
func (s *PGSessions) SetToken(ctx context.Context, id, tok string) error {
	if _, err := s.p.pool.Exec(ctx, `UPDATE kbs_sessions SET token = $2 WHERE id = $1`, id, tok); err != nil {
		return err
	}
	s.remember(id, tok, s.now().Add(s.ttl))
	return nil
}

// Token implements SessionStore. A session's token never changes once
// set, so each replica remembers the tokens it read or set (until the
// session expires): a resource request costs no query for its session.
func (s *PGSessions) Token(ctx context.Context, id string) (string, error) {
	s.mu.Lock()
	c, ok := s.tokens[id]
	s.mu.Unlock()
	if ok && !s.now().After(c.expires) {
		return c.token, nil
	}
	v, err := s.load(ctx, s.p.pool, id, "")
	if err != nil {
		return "", err
	}
	if v.token == "" {
		return "", errNotAttested
	}
	s.remember(id, v.token, v.expires)
	return v.token, nil
}

// maxRememberedTokens bounds a replica's session token cache.
const maxRememberedTokens = 1 << 14

type rememberedToken struct {
	token   string
	expires time.Time
}

func (s *PGSessions) remember(id, tok string, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil || len(s.tokens) >= maxRememberedTokens {
		s.tokens = map[string]rememberedToken{}
	}
	s.tokens[id] = rememberedToken{tok, expires}
}

// Count implements SessionStore.
func (s *PGSessions) Count(ctx context.Context) int {
	var n int
	_ = s.p.pool.QueryRow(ctx, `SELECT count(*) FROM kbs_sessions WHERE expires >= $1`, s.now()).Scan(&n)
	return n
}
