package kbs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"cocoon.dev/cocoon/internal/pgschema"
	"cocoon.dev/cocoon/kbs/protocol"
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
	// The request id (Idempotency-Key) a version was put with: a retried
	// put finds it, on any replica, instead of storing a second version.
	9: `ALTER TABLE kbs_resources ADD COLUMN request_id text;
	CREATE UNIQUE INDEX kbs_resources_request ON kbs_resources (path, request_id) WHERE request_id IS NOT NULL;`,
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
// so that replicas putting at once get distinct versions. Under the same
// lock a request id already stored answers its version: a put retried on
// another replica after the first one committed and died finds it.
func (s *PGStore) Put(ctx context.Context, path string, data []byte, opt PutOptions) (PutResult, error) {
	tx, err := s.p.pool.Begin(ctx)
	if err != nil {
		return PutResult{}, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "cocoon-kbs-resource:"+path); err != nil {
		return PutResult{}, err
	}
	var requestID *string
	if opt.RequestID != "" {
		requestID = &opt.RequestID
		var (
			n       int
			sealed  []byte
			oneShot bool
		)
		err := tx.QueryRow(ctx, `SELECT version, sealed, one_shot FROM kbs_resources WHERE path = $1 AND request_id = $2`, path, opt.RequestID).Scan(&n, &sealed, &oneShot)
		switch {
		case err == nil:
			pt, err := s.open(path, n, sealed)
			if err != nil {
				return PutResult{}, err
			}
			defer clear(pt)
			return replay(path, n, pt, oneShot, data, opt)
		case !errors.Is(err, pgx.ErrNoRows):
			return PutResult{}, err
		}
	}
	var version int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) + 1 FROM kbs_resources WHERE path = $1`, path).Scan(&version); err != nil {
		return PutResult{}, err
	}
	sealed, err := s.seal(path, version, data)
	if err != nil {
		return PutResult{}, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO kbs_resources (path, version, sealed, one_shot, request_id) VALUES ($1, $2, $3, $4, $5)`, path, version, sealed, opt.OneShot, requestID); err != nil {
		return PutResult{}, err
	}
	defer s.cache.invalidate(path)
	return PutResult{Version: version}, tx.Commit(ctx)
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
