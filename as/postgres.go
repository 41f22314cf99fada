package as

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"cocoon.dev/cocoon/internal/pgschema"
)

// PGNonces keeps the challenges' nonces in PostgreSQL, so that a nonce one
// replica issued is accepted by any other, once across all of them (its row
// is deleted by the attestation that uses it).
type PGNonces struct {
	pool    *pgxpool.Pool
	ttl     time.Duration
	now     func() time.Time
	issued  atomic.Int64
	full    atomic.Bool
	maxOpen int
}

// migrations are the service's schema versions (pgschema.Migrate; recorded
// in cocoon_as_schema). Append; never edit one that shipped.
var migrations = []string{
	1: `CREATE TABLE as_nonces (
		nonce text PRIMARY KEY,
		expires timestamptz NOT NULL
	);
	CREATE INDEX as_nonces_expires ON as_nonces (expires);`,
}

// OpenPGNonces connects to the database at url (postgres://...), brings its
// schema up to date and returns the nonce store; ttl is a nonce's life
// (default 5 minutes), now the clock (nil: time.Now).
func OpenPGNonces(ctx context.Context, url string, ttl time.Duration, now func() time.Time) (*PGNonces, error) {
	pool, err := pgschema.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	// "cocoon-as" in ASCII.
	if err := pgschema.Migrate(ctx, pool, "cocoon_as_schema", 0x636f636f6e2d6173, migrations); err != nil {
		pool.Close()
		return nil, err
	}
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &PGNonces{pool: pool, ttl: ttl, now: now, maxOpen: maxNonces}, nil
}

// Close closes the connections.
func (p *PGNonces) Close() { p.pool.Close() }

// Issue implements NonceStore.
func (p *PGNonces) Issue(ctx context.Context) (string, time.Time, error) {
	n, err := newNonce()
	if err != nil {
		return "", time.Time{}, err
	}
	now := p.now()
	// Expired nonces go, and the outstanding ones are counted, now and then
	// (amortized): challenges are unauthenticated, so the table is bounded.
	if p.issued.Add(1)%1024 == 1 || p.full.Load() {
		if _, err := p.pool.Exec(ctx, `DELETE FROM as_nonces WHERE expires < $1`, now); err != nil {
			return "", time.Time{}, err
		}
		var open int
		if err := p.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM as_nonces LIMIT $1) s`, p.maxOpen).Scan(&open); err != nil {
			return "", time.Time{}, err
		}
		p.full.Store(open >= p.maxOpen)
	}
	if p.full.Load() {
		return "", time.Time{}, errTooManyChallenges
	}
	exp := now.Add(p.ttl)
	if _, err := p.pool.Exec(ctx, `INSERT INTO as_nonces (nonce, expires) VALUES ($1, $2)`, n, exp); err != nil {
		return "", time.Time{}, err
	}
	return n, exp, nil
}

// Consume implements NonceStore: the row goes in one statement, so two
// replicas given the same nonce at once accept it once.
func (p *PGNonces) Consume(ctx context.Context, nonce string) (bool, error) {
	var exp time.Time
	err := p.pool.QueryRow(ctx, `DELETE FROM as_nonces WHERE nonce = $1 RETURNING expires`, nonce).Scan(&exp)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return false, err
	}
	return p.now().Before(exp), nil
}
