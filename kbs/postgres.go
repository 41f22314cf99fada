package kbs

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"cocoon.dev/cocoon/internal/pgschema"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/tee"
)

// Postgres is a broker's shared state in PostgreSQL: resources (PGStore)
// and protocol sessions (PGSessions), so that several replicas serve the
// same broker and a replica's death loses nothing acknowledged. Resources
// are sealed before they reach the database, as in the embedded store.
type Postgres struct {
	pool *pgxpool.Pool
	// life ends when the store is closed: a policy listener's wait stops
	// at once rather than hold its connection (and Close) until it times
	// out.
	life    context.Context
	endLife context.CancelFunc

	mu       sync.Mutex
	flushers []func(context.Context) error // the audit logs' queues
}

// ErrStoreClosed is what a closed store answers.
var ErrStoreClosed = errors.New("kbs: the store is closed")

// migrations are the schema's versions (pgschema.Migrate; recorded in
// cocoon_kbs_schema). Append; never edit one that shipped.
var migrations = []string{
	1: `CREATE TABLE kbs_resources (
		path text PRIMARY KEY,
		sealed bytea NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE kbs_sessions (
		id text PRIMARY KEY,
		tee text NOT NULL,
		binding text NOT NULL,
		nonce text NOT NULL,
		nonce_used boolean NOT NULL DEFAULT false,
		token text NOT NULL DEFAULT '',
		expires timestamptz NOT NULL
	);
	CREATE INDEX kbs_sessions_expires ON kbs_sessions (expires);`,
	2: `CREATE TABLE kbs_policy (
		id integer PRIMARY KEY CHECK (id = 1),
		text text NOT NULL,
		version bigint NOT NULL,
		mac bytea NOT NULL
	);`,
	3: `ALTER TABLE kbs_resources ADD COLUMN version integer NOT NULL DEFAULT 1,
		ADD COLUMN disabled boolean NOT NULL DEFAULT false;
	ALTER TABLE kbs_resources DROP CONSTRAINT kbs_resources_pkey;
	ALTER TABLE kbs_resources ADD PRIMARY KEY (path, version);`,
	4: `CREATE TABLE kbs_audit (
		id bigserial PRIMARY KEY,
		at timestamptz NOT NULL DEFAULT now(),
		line jsonb NOT NULL
	);`,
	5: `ALTER TABLE kbs_resources ADD COLUMN one_shot boolean NOT NULL DEFAULT false,
		ADD COLUMN released_at timestamptz;`,
	6: `CREATE TABLE kbs_admin_keys (
		name text PRIMARY KEY,
		pub bytea NOT NULL,
		mac bytea NOT NULL,
		added_at timestamptz NOT NULL DEFAULT now()
	);`,
	7: `CREATE FUNCTION kbs_resources_notify() RETURNS trigger AS $$
	BEGIN
		PERFORM pg_notify('` + resourcesChannel + `', COALESCE(NEW.path, OLD.path));
		RETURN NULL;
	END $$ LANGUAGE plpgsql;
	CREATE TRIGGER kbs_resources_changed AFTER INSERT OR UPDATE OR DELETE ON kbs_resources
		FOR EACH ROW EXECUTE FUNCTION kbs_resources_notify();`,
	// Sessions live 5 minutes: written without the write-ahead log. A
	// database crash empties the table (clients authenticate again; no
	// nonce can be used twice, since its session is gone), and a standby
	// does not have them.
	8: `ALTER TABLE kbs_sessions SET UNLOGGED;`,
}

// migrationLock is the advisory lock replicas take to migrate one at a
// time ("cocoon-kbs" in ASCII).
const migrationLock = 0x636f636f6e6b6273

// OpenPostgres connects to the database at url (postgres://...) and
// brings its schema up to date.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	pool, err := pgschema.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := pgschema.Migrate(ctx, pool, "cocoon_kbs_schema", migrationLock, migrations); err != nil {
		pool.Close()
		return nil, err
	}
	life, end := context.WithCancel(context.Background())
	return &Postgres{pool: pool, life: life, endLife: end}, nil
}

// Close closes the connections; whatever follows the store stops.
func (p *Postgres) Close() {
	// What the audit logs queued goes in first (for at most 5 s).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = p.flushAudit(ctx)
	cancel()
	p.endLife()
	p.pool.Close()
}

// flushAudit waits until what this process's audit logs queued is in the
// database.
func (p *Postgres) flushAudit(ctx context.Context) error {
	p.mu.Lock()
	flushers := p.flushers
	p.mu.Unlock()
	for _, f := range flushers {
		if err := f(ctx); err != nil {
			return err
		}
	}
	return nil
}

// PGStore is a Store in PostgreSQL: values sealed under the master key (the
// database holds ciphertext only); a Put is acknowledged once committed.
type PGStore struct {
	p *Postgres
	sealer
	cache resourceCache
}

// Store returns the resource store, sealing with the 32-byte master key
// and opening with it and the readable keys (a rotation's other key).
func (p *Postgres) Store(masterKey []byte, readable ...[]byte) (*PGStore, error) {
	sl, err := newSealer(masterKey, readable...)
	if err != nil {
		return nil, err
	}
	s := &PGStore{p: p, sealer: sl}
	go s.follow()
	return s, nil
}

// Put implements Store: the next version, numbered under a per-path lock
// so that replicas putting at once get distinct versions.
func (s *PGStore) Put(ctx context.Context, path string, data []byte, opt PutOptions) (int, error) {
	tx, err := s.p.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "cocoon-kbs-resource:"+path); err != nil {
		return 0, err
	}
	var version int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) + 1 FROM kbs_resources WHERE path = $1`, path).Scan(&version); err != nil {
		return 0, err
	}
	sealed, err := s.seal(path, version, data)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kbs_resources (path, version, sealed, one_shot) VALUES ($1, $2, $3, $4)`, path, version, sealed, opt.OneShot); err != nil {
		return 0, err
	}
	defer s.cache.invalidate(path)
	return version, tx.Commit(ctx)
}

// Get implements Store.
func (s *PGStore) Get(ctx context.Context, path string, version int) ([]byte, int, error) {
	v, version, _, err := s.pick(ctx, path, version)
	if err != nil {
		return nil, version, err
	}
	pt, err := s.open(path, version, v)
	return pt, version, err
}

// Release implements Store. A one-shot version is read again with its row
// locked (FOR UPDATE), checked and marked in one transaction: of two
// replicas releasing it at once, the second waits for the first's commit
// and then sees it released.
func (s *PGStore) Release(ctx context.Context, path string, version int) ([]byte, int, error) {
	if c, ok := s.cache.get(path, version); ok {
		pt, err := s.open(path, c.version, c.sealed)
		return pt, c.version, err
	}
	gen := s.cache.generation()
	v, n, oneShot, err := s.pick(ctx, path, version)
	if err != nil {
		return nil, n, err
	}
	if !oneShot {
		pt, err := s.open(path, n, v)
		if err == nil {
			s.cache.put(gen, path, version, cachedValue{sealed: v, version: n})
		}
		return pt, n, err
	}
	tx, err := s.p.pool.Begin(ctx)
	if err != nil {
		return nil, n, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// The version picked above, locked: a newer version put meanwhile
	// does not change what this request was about to release.
	var released *time.Time
	err = tx.QueryRow(ctx, `SELECT sealed, released_at FROM kbs_resources WHERE path = $1 AND version = $2 AND NOT disabled FOR UPDATE`, path, n).Scan(&v, &released)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, n, fmt.Errorf("%s: no enabled version %d: %w", path, n, ErrNotFound)
	}
	if err != nil {
		return nil, n, err
	}
	if released != nil {
		return nil, n, fmt.Errorf("%s version %d: %w", path, n, ErrReleased)
	}
	pt, err := s.open(path, n, v)
	if err != nil {
		return nil, n, err
	}
	if _, err := tx.Exec(ctx, `UPDATE kbs_resources SET released_at = now() WHERE path = $1 AND version = $2`, path, n); err != nil {
		clear(pt)
		return nil, n, err
	}
	if err := tx.Commit(ctx); err != nil {
		clear(pt)
		return nil, n, err
	}
	return pt, n, nil
}

// pick reads the sealed value of version (0: the newest enabled one).
func (s *PGStore) pick(ctx context.Context, path string, version int) ([]byte, int, bool, error) {
	var v []byte
	var oneShot bool
	var err error
	if version > 0 {
		err = s.p.pool.QueryRow(ctx, `SELECT sealed, one_shot FROM kbs_resources WHERE path = $1 AND version = $2 AND NOT disabled`, path, version).Scan(&v, &oneShot)
	} else {
		err = s.p.pool.QueryRow(ctx, `SELECT sealed, version, one_shot FROM kbs_resources WHERE path = $1 AND NOT disabled ORDER BY version DESC LIMIT 1`, path).Scan(&v, &version, &oneShot)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, version, false, fmt.Errorf("%s: no enabled version%s: %w", path, versionSuffix(version), ErrNotFound)
	}
	return v, version, oneShot, err
}

// Versions implements Store.
func (s *PGStore) Versions(ctx context.Context, path string) ([]protocol.ResourceVersion, error) {
	rows, err := s.p.pool.Query(ctx, `SELECT version, disabled, one_shot, released_at IS NOT NULL FROM kbs_resources WHERE path = $1 ORDER BY version`, path)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (protocol.ResourceVersion, error) {
		var v protocol.ResourceVersion
		return v, r.Scan(&v.N, &v.Disabled, &v.OneShot, &v.Released)
	})
	if err == nil && len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	return out, err
}

// SetDisabled implements Store.
func (s *PGStore) SetDisabled(ctx context.Context, path string, version int, disabled bool) error {
	tag, err := s.p.pool.Exec(ctx, `UPDATE kbs_resources SET disabled = $3 WHERE path = $1 AND version = $2`, path, version, disabled)
	s.cache.invalidate(path)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s version %d: %w", path, version, ErrNotFound)
	}
	return nil
}

// List implements Store.
func (s *PGStore) List(ctx context.Context) ([]string, error) {
	rows, err := s.p.pool.Query(ctx, `SELECT DISTINCT path FROM kbs_resources ORDER BY path`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Delete implements Store.
func (s *PGStore) Delete(ctx context.Context, path string) error {
	tag, err := s.p.pool.Exec(ctx, `DELETE FROM kbs_resources WHERE path = $1`, path)
	s.cache.invalidate(path)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	return nil
}

// Reseal implements Resealer: each value sealed again under the master key
// is written only if it is still the value read (a compare-and-swap), so
// replicas resealing at once, or a version disabled meanwhile, lose
// nothing.
func (s *PGStore) Reseal(ctx context.Context) (ResealResult, error) {
	var res ResealResult
	rows, err := s.p.pool.Query(ctx, `SELECT path, version, sealed FROM kbs_resources ORDER BY path, version`)
	if err != nil {
		return res, err
	}
	type row struct {
		path    string
		version int
		sealed  []byte
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.path, &x.version, &x.sealed)
	})
	if err != nil {
		return res, err
	}
	for _, x := range all {
		res.Values++
		pt, current, err := s.openWhich(x.path, x.version, x.sealed)
		if err != nil {
			return res, err
		}
		if current {
			clear(pt)
			continue
		}
		sealed, err := s.seal(x.path, x.version, pt)
		clear(pt)
		if err != nil {
			return res, err
		}
		tag, err := s.p.pool.Exec(ctx, `UPDATE kbs_resources SET sealed = $4 WHERE path = $1 AND version = $2 AND sealed = $3`, x.path, x.version, x.sealed, sealed)
		if err != nil {
			return res, err
		}
		if tag.RowsAffected() == 1 {
			res.Resealed++
		}
	}
	return res, nil
}

// Close implements Store; the connections are the Postgres's to close.
func (s *PGStore) Close() error { return nil }

// PGSessions keeps the protocol's sessions in PostgreSQL: a nonce is used
// once across every replica (the row is locked while it is checked and
// marked), and any replica serves any step of a session.
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

// PGPolicies keeps the release policy in PostgreSQL: a policy set on one
// replica is the policy of all of them (they are told by NOTIFY, and look
// again at least every few seconds). The database is not trusted with the
// policy's integrity: each version carries an HMAC under a key derived from
// the master key, and one that does not verify is refused.
type PGPolicies struct {
	p        *Postgres
	macKey   []byte
	readable [][]byte // MAC keys of a rotation's other master keys
	listener *pgxpool.Conn
}

// Policies returns the shared release policy, authenticated with a key
// derived from the 32-byte master key (and accepted under one derived from
// a readable key: a rotation's other key).
func (p *Postgres) Policies(masterKey []byte, readable ...[]byte) (*PGPolicies, error) {
	k, err := policyMACKey(masterKey)
	if err != nil {
		return nil, err
	}
	s := &PGPolicies{p: p, macKey: k}
	for _, r := range readable {
		rk, err := policyMACKey(r)
		if err != nil {
			return nil, err
		}
		s.readable = append(s.readable, rk)
	}
	return s, nil
}

func policyMACKey(masterKey []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, masterKey, nil, "cocoon kbs release policy mac", 32)
}

func (s *PGPolicies) mac(version int64, text string) []byte {
	return policyMAC(s.macKey, version, text)
}

func policyMAC(key []byte, version int64, text string) []byte {
	m := hmac.New(sha256.New, key)
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(version))
	m.Write(v[:])
	m.Write([]byte(text))
	return m.Sum(nil)
}

// policyChannel is the NOTIFY channel of policy changes.
const policyChannel = "cocoon_kbs_policy"

// ReleasePolicy implements PolicyStore.
func (s *PGPolicies) ReleasePolicy(ctx context.Context) (string, int64, error) {
	var text string
	var ver int64
	var mac []byte
	err := s.p.pool.QueryRow(ctx, `SELECT text, version, mac FROM kbs_policy WHERE id = 1`).Scan(&text, &ver, &mac)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	ok := hmac.Equal(mac, s.mac(ver, text))
	for _, k := range s.readable {
		ok = ok || hmac.Equal(mac, policyMAC(k, ver, text))
	}
	if !ok {
		return "", 0, fmt.Errorf("the stored release policy (version %d) does not carry this master key's MAC: the database was altered, or the replicas have different master keys", ver)
	}
	return text, ver, nil
}

// SetReleasePolicy implements PolicyStore.
func (s *PGPolicies) SetReleasePolicy(ctx context.Context, text string) (int64, error) {
	tx, err := s.p.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// One setter at a time, the first one included (no row to lock yet).
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock+1)); err != nil {
		return 0, err
	}
	var ver int64
	if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT version FROM kbs_policy WHERE id = 1), 0) + 1`).Scan(&ver); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kbs_policy (id, text, version, mac) VALUES (1, $1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET text = excluded.text, version = excluded.version, mac = excluded.mac`, text, ver, s.mac(ver, text)); err != nil {
		return 0, err
	}
	// Delivered to the listeners when the transaction commits.
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, policyChannel); err != nil {
		return 0, err
	}
	return ver, tx.Commit(ctx)
}

// Reseal authenticates the stored policy under the master key again (the
// last step of a master-key rotation, with the resources'): same text, same
// version, a new MAC, written only if the row is still the one read.
func (s *PGPolicies) Reseal(ctx context.Context) (bool, error) {
	var text string
	var ver int64
	var mac []byte
	err := s.p.pool.QueryRow(ctx, `SELECT text, version, mac FROM kbs_policy WHERE id = 1`).Scan(&text, &ver, &mac)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if hmac.Equal(mac, s.mac(ver, text)) {
		return false, nil
	}
	if _, _, err := s.ReleasePolicy(ctx); err != nil {
		return false, err // under no key this replica has: refuse to bless it
	}
	tag, err := s.p.pool.Exec(ctx, `UPDATE kbs_policy SET mac = $3 WHERE id = 1 AND version = $1 AND mac = $2`, ver, mac, s.mac(ver, text))
	return err == nil && tag.RowsAffected() == 1, err
}

// WaitPolicyChange implements PolicyStore. It is called from one goroutine.
func (s *PGPolicies) WaitPolicyChange(ctx context.Context, d time.Duration) error {
	if s.p.life.Err() != nil {
		if s.listener != nil {
			s.listener.Release()
			s.listener = nil
		}
		return ErrStoreClosed
	}
	if s.listener == nil {
		c, err := s.p.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		if _, err := c.Exec(ctx, `LISTEN `+policyChannel); err != nil {
			c.Release()
			return err
		}
		s.listener = c
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	defer context.AfterFunc(s.p.life, cancel)()
	_, err := s.listener.Conn().WaitForNotification(wctx)
	if err == nil || wctx.Err() != nil && ctx.Err() == nil && s.p.life.Err() == nil {
		return nil // told, or time to look again
	}
	if s.p.life.Err() != nil {
		s.listener.Release()
		s.listener = nil
		return ErrStoreClosed
	}
	// The connection is in doubt: a fresh one next time.
	s.listener.Release()
	s.listener = nil
	return err
}

// PGAudit is the replicas' one audit log: each decision a line in
// kbs_audit, in the order the database committed them.
type PGAudit struct {
	p *Postgres
	// Logger reports lines the database refused (default: slog's).
	Logger *slog.Logger
	start  sync.Once
	queue  chan auditWrite
}

// auditWrite is a line to insert, or (line "") a barrier whose done
// channel is told once every line queued before it was inserted.
type auditWrite struct {
	line string
	done chan error
}

// Audit returns the shared audit log (an io.Writer of JSON lines).
func (p *Postgres) Audit() *PGAudit {
	a := &PGAudit{p: p}
	p.mu.Lock()
	p.flushers = append(p.flushers, a.flush)
	p.mu.Unlock()
	return a
}

// maxAuditLine bounds one line (they are the broker's own, small), and
// maxAuditBatch the lines one insert takes and the queue holds.
const (
	maxAuditLine  = 64 << 10
	maxAuditBatch = 1024
)

// Write queues one JSON line for the shared log and returns: the request
// that made it is not held up by the database. Lines are inserted in
// order, many per statement, within milliseconds; the replica's own audit
// file, written before, stays the record of what it decided. A full queue
// makes Write wait (nothing is dropped); a line the database refuses is
// logged with the line.
func (a *PGAudit) Write(b []byte) (int, error) {
	line := bytes.TrimSpace(b)
	if len(line) > maxAuditLine {
		return 0, fmt.Errorf("audit line of %d bytes", len(line))
	}
	if len(line) == 0 {
		return len(b), nil
	}
	if err := a.enqueue(auditWrite{line: string(line)}); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (a *PGAudit) enqueue(w auditWrite) error {
	a.start.Do(func() {
		a.queue = make(chan auditWrite, maxAuditBatch)
		go a.commit()
	})
	select {
	case a.queue <- w:
		return nil
	case <-a.p.life.Done():
		return ErrStoreClosed
	}
}

// flush returns once every line queued so far is in the database (or ctx
// ends).
func (a *PGAudit) flush(ctx context.Context) error {
	done := make(chan error, 1)
	if err := a.enqueue(auditWrite{done: done}); err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-a.p.life.Done():
		return ErrStoreClosed
	}
}

// commit inserts what is queued, a batch at a time, in order, on a
// connection of its own whose commits do not wait for the write-ahead
// log's flush (synchronous_commit off): the database writes the log to
// disk within a fraction of a second, and a database crash in between
// loses those lines from the shared log, never from the replica's file.
func (a *PGAudit) commit() {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	log := a.Logger
	if log == nil {
		log = slog.Default()
	}
	for {
		var batch []auditWrite
		select {
		case w := <-a.queue:
			batch = append(batch, w)
		case <-a.p.life.Done():
			return
		}
	more:
		for len(batch) < maxAuditBatch {
			select {
			case w := <-a.queue:
				batch = append(batch, w)
			default:
				break more
			}
		}
		var lines []string
		var barriers []chan error
		for _, w := range batch {
			if w.done != nil {
				barriers = append(barriers, w.done)
			} else {
				lines = append(lines, w.line)
			}
		}
		ctx, cancel := context.WithTimeout(a.p.life, 5*time.Second)
		var err error
		if len(lines) > 0 {
			if conn == nil {
				conn, err = a.connect(ctx)
			}
			if err == nil {
				err = insertAudit(ctx, conn, lines, log)
				if conn.IsClosed() {
					conn = nil
				}
			}
			if err != nil {
				log.Error("audit lines could not be written to the shared log (the replica's file has them)", "lines", len(lines), "error", err)
			}
		}
		cancel()
		for _, d := range barriers {
			d <- err
		}
	}
}

func (a *PGAudit) connect(ctx context.Context) (*pgx.Conn, error) {
	c, err := a.p.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := c.Hijack()
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// insertAudit inserts lines in one statement; when that fails, line by
// line, so that one bad line (logged) costs only itself.
func insertAudit(ctx context.Context, conn *pgx.Conn, lines []string, log *slog.Logger) error {
	_, err := conn.Exec(ctx, `INSERT INTO kbs_audit (line)
		SELECT l::jsonb FROM unnest($1::text[]) WITH ORDINALITY AS t(l, n) ORDER BY n`, lines)
	if err == nil || len(lines) == 1 || conn.IsClosed() {
		return err
	}
	for _, l := range lines {
		if _, err := conn.Exec(ctx, `INSERT INTO kbs_audit (line) VALUES ($1)`, l); err != nil {
			if conn.IsClosed() {
				return err
			}
			log.Error("an audit line was refused by the shared log", "line", l, "error", err)
		}
	}
	return nil
}

// Tail implements AuditReader: the newest n lines, oldest first (this
// replica's queued lines included).
func (a *PGAudit) Tail(ctx context.Context, n int) ([]json.RawMessage, error) {
	if err := a.p.flushAudit(ctx); err != nil {
		return nil, err
	}
	rows, err := a.p.pool.Query(ctx, `SELECT line::text FROM (SELECT id, line FROM kbs_audit ORDER BY id DESC LIMIT $1) t ORDER BY id`, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (json.RawMessage, error) {
		var s string
		err := r.Scan(&s)
		return json.RawMessage(s), err
	})
}
