package kbs

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

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
