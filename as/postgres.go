package as

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
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
	closed  atomic.Bool
}

// ErrClosed is what a closed store answers; whatever follows it stops.
var ErrClosed = errors.New("as: the store is closed")

// migrations are the service's schema versions (pgschema.Migrate; recorded
// in cocoon_as_schema). Append; never edit one that shipped.
var migrations = []string{
	1: `CREATE TABLE as_nonces (
		nonce text PRIMARY KEY,
		expires timestamptz NOT NULL
	);
	CREATE INDEX as_nonces_expires ON as_nonces (expires);`,
	2: `CREATE TABLE as_signing_keys (
		kid text PRIMARY KEY,
		jwk text NOT NULL,
		seen timestamptz NOT NULL,
		mac bytea NOT NULL
	);`,
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
func (p *PGNonces) Close() {
	p.closed.Store(true)
	p.pool.Close()
}

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

// PGKeys is the replicas' shared key directory: each replica publishes its
// public signing keys, and every replica's JWKS lists them all, so a token
// any replica signed verifies with the keys any replica serves. The
// database is not trusted with the JWKS (a key in it is a key relying
// parties trust): each entry carries an HMAC under a secret the replicas
// share (derived from their admin token), and one without it is not served.
type PGKeys struct {
	db     *PGNonces // the database the nonces are in
	macKey []byte
}

// Keys returns the key directory on the same database; secret is what the
// replicas share (their admin token).
func (p *PGNonces) Keys(secret []byte) (*PGKeys, error) {
	if len(secret) < 16 {
		return nil, errors.New("the key directory's secret (the admin token) is too short")
	}
	k, err := hkdf.Key(sha256.New, secret, nil, "cocoon as signing key directory", 32)
	if err != nil {
		return nil, err
	}
	return &PGKeys{db: p, macKey: k}, nil
}

func (k *PGKeys) mac(kid string, jwk []byte) []byte {
	m := hmac.New(sha256.New, k.macKey)
	m.Write([]byte(kid))
	m.Write([]byte{0})
	m.Write(jwk)
	return m.Sum(nil)
}

// Publish implements KeyDirectory.
func (k *PGKeys) Publish(ctx context.Context, set jose.JSONWebKeySet) error {
	if k.db.closed.Load() {
		return ErrClosed
	}
	now := k.db.now()
	for _, key := range set.Keys {
		pub := key.Public()
		b, err := pub.MarshalJSON()
		if err != nil {
			return err
		}
		if _, err := k.db.pool.Exec(ctx, `INSERT INTO as_signing_keys (kid, jwk, seen, mac) VALUES ($1, $2, $3, $4)
			ON CONFLICT (kid) DO UPDATE SET jwk = excluded.jwk, seen = excluded.seen, mac = excluded.mac`, key.KeyID, string(b), now, k.mac(key.KeyID, b)); err != nil {
			return err
		}
	}
	return nil
}

// Published implements KeyDirectory: the keys published since since whose
// MAC verifies.
func (k *PGKeys) Published(ctx context.Context, since time.Time) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	rows, err := k.db.pool.Query(ctx, `SELECT kid, jwk, mac FROM as_signing_keys WHERE seen >= $1 ORDER BY kid`, since)
	if err != nil {
		return set, err
	}
	defer rows.Close()
	for rows.Next() {
		var kid, jwk string
		var mac []byte
		if err := rows.Scan(&kid, &jwk, &mac); err != nil {
			return set, err
		}
		if !hmac.Equal(mac, k.mac(kid, []byte(jwk))) {
			continue // not written by a replica: never served
		}
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON([]byte(jwk)); err != nil || !key.IsPublic() || key.KeyID != kid {
			continue
		}
		set.Keys = append(set.Keys, key)
	}
	return set, rows.Err()
}
