package kbs

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// AdminKey is a public key allowed to sign admin tokens.
type AdminKey struct {
	Name  string            `json:"name"`
	Key   ed25519.PublicKey `json:"-"`
	Added time.Time         `json:"added"`
}

// AdminKeyStore keeps the admin keys where every replica reads them: a key
// added or removed through one replica's admin API holds on every replica
// from the next request.
type AdminKeyStore interface {
	AdminKeys(ctx context.Context) ([]AdminKey, error)
	// AddAdminKey adds a key under a new name.
	AddAdminKey(ctx context.Context, name string, key ed25519.PublicKey) error
	// RemoveAdminKey removes a key; the last one is not removed.
	RemoveAdminKey(ctx context.Context, name string) error
}

// Errors of the admin key stores.
var (
	ErrAdminKeyExists = errors.New("an admin key of that name exists")
	ErrLastAdminKey   = errors.New("the last admin key is not removed: add another first")
)

var adminKeyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// CheckAdminKeyName says whether name can name an admin key.
func CheckAdminKeyName(name string) error {
	if !adminKeyName.MatchString(name) {
		return fmt.Errorf("admin key name %q: use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", name)
	}
	return nil
}

// PGAdminKeys keeps the admin keys in PostgreSQL. Each row carries an HMAC
// under a key derived from the master key: whoever can write to the
// database cannot make itself an admin, and a row without a valid MAC is
// ignored (and logged by the caller's refusal).
type PGAdminKeys struct {
	p        *Postgres
	macKey   []byte
	readable [][]byte
}

// AdminKeys returns the admin key store, authenticated under the master
// key (and accepted under a rotation's other keys).
func (p *Postgres) AdminKeys(masterKey []byte, readable ...[]byte) (*PGAdminKeys, error) {
	k, err := adminKeyMACKey(masterKey)
	if err != nil {
		return nil, err
	}
	s := &PGAdminKeys{p: p, macKey: k}
	for _, r := range readable {
		rk, err := adminKeyMACKey(r)
		if err != nil {
			return nil, err
		}
		s.readable = append(s.readable, rk)
	}
	return s, nil
}

func adminKeyMACKey(masterKey []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, masterKey, nil, "cocoon kbs admin key mac", 32)
}

func adminKeyMAC(key []byte, name string, pub ed25519.PublicKey) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(pub)
	return m.Sum(nil)
}

func (s *PGAdminKeys) valid(name string, pub ed25519.PublicKey, mac []byte) (current, ok bool) {
	if hmac.Equal(mac, adminKeyMAC(s.macKey, name, pub)) {
		return true, true
	}
	for _, k := range s.readable {
		if hmac.Equal(mac, adminKeyMAC(k, name, pub)) {
			return false, true
		}
	}
	return false, false
}

// AdminKeys implements AdminKeyStore: the keys whose MAC verifies.
func (s *PGAdminKeys) AdminKeys(ctx context.Context) ([]AdminKey, error) {
	rows, err := s.p.pool.Query(ctx, `SELECT name, pub, mac, added_at FROM kbs_admin_keys ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AdminKey
	var bad []string
	for rows.Next() {
		var k AdminKey
		var pub, mac []byte
		if err := rows.Scan(&k.Name, &pub, &mac, &k.Added); err != nil {
			return nil, err
		}
		if _, ok := s.valid(k.Name, pub, mac); !ok || len(pub) != ed25519.PublicKeySize {
			bad = append(bad, k.Name)
			continue
		}
		k.Key = ed25519.PublicKey(pub)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(bad) > 0 && len(out) == 0 {
		return nil, fmt.Errorf("no stored admin key carries this master key's MAC (%v): the database was altered, or the replicas have different master keys", bad)
	}
	return out, nil
}

// AddAdminKey implements AdminKeyStore.
func (s *PGAdminKeys) AddAdminKey(ctx context.Context, name string, key ed25519.PublicKey) error {
	if err := CheckAdminKeyName(name); err != nil {
		return err
	}
	_, err := s.p.pool.Exec(ctx, `INSERT INTO kbs_admin_keys (name, pub, mac) VALUES ($1, $2, $3)`, name, []byte(key), adminKeyMAC(s.macKey, name, key))
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%s: %w", name, ErrAdminKeyExists)
	}
	return err
}

// RemoveAdminKey implements AdminKeyStore, under a lock so that two
// admins removing each other's keys at once leave one.
func (s *PGAdminKeys) RemoveAdminKey(ctx context.Context, name string) error {
	tx, err := s.p.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE kbs_admin_keys IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM kbs_admin_keys`).Scan(&n); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM kbs_admin_keys WHERE name = $1`, name)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("admin key %s: %w", name, ErrNotFound)
	}
	if n <= 1 {
		return ErrLastAdminKey
	}
	return tx.Commit(ctx)
}

// Reseal authenticates every admin key under the master key again (a
// master-key rotation's last step); a row under no key this replica has is
// left alone, not blessed.
func (s *PGAdminKeys) Reseal(ctx context.Context) (int, error) {
	rows, err := s.p.pool.Query(ctx, `SELECT name, pub, mac FROM kbs_admin_keys`)
	if err != nil {
		return 0, err
	}
	type row struct {
		name     string
		pub, mac []byte
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.name, &x.pub, &x.mac)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range all {
		current, ok := s.valid(x.name, x.pub, x.mac)
		if current || !ok {
			continue
		}
		tag, err := s.p.pool.Exec(ctx, `UPDATE kbs_admin_keys SET mac = $3 WHERE name = $1 AND mac = $2`, x.name, x.mac, adminKeyMAC(s.macKey, x.name, x.pub))
		if err != nil {
			return n, err
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

// StaticAdminKeys is the embedded store's admin key: the state directory's
// admin.pub, replaced there (it cannot be added to or removed through the
// API).
type StaticAdminKeys struct{ Key ed25519.PublicKey }

// AdminKeys implements AdminKeyStore: the one key, or none.
func (s StaticAdminKeys) AdminKeys(context.Context) ([]AdminKey, error) {
	if s.Key == nil {
		return nil, nil
	}
	return []AdminKey{{Name: "admin", Key: s.Key}}, nil
}

// ErrStaticAdminKeys is what StaticAdminKeys answers to a change.
var ErrStaticAdminKeys = errors.New("with the embedded store the admin key is the state directory's admin.pub: replace that file and restart the broker (several admin keys need --store postgres://...)")

// AddAdminKey implements AdminKeyStore.
func (StaticAdminKeys) AddAdminKey(context.Context, string, ed25519.PublicKey) error {
	return ErrStaticAdminKeys
}

// RemoveAdminKey implements AdminKeyStore.
func (StaticAdminKeys) RemoveAdminKey(context.Context, string) error { return ErrStaticAdminKeys }
