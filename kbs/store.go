// Package kbs is cocoon's key broker: a server of the Confidential
// Containers KBS protocol (v0.4.0) that releases a secret only to a workload
// whose attestation satisfies a release policy, encrypted (JWE) to a key that
// exists only inside its TEE; an embedded, encrypted, durable store; an
// admin API authenticated with an Ed25519 key; and an audit log.
package kbs

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store keeps resources by path ("repo/type/tag"). Put returns only after the
// resource is durable. BoltStore is the embedded default; PGStore is shared
// by replicas.
type Store interface {
	Put(ctx context.Context, path string, data []byte) error
	Get(ctx context.Context, path string) ([]byte, error)
	List(ctx context.Context) ([]string, error)
	Delete(ctx context.Context, path string) error
	Close() error
}

// ErrNotFound marks a resource that does not exist.
var ErrNotFound = errors.New("no such resource")

var bucket = []byte("resources")

// BoltStore is a Store in a bbolt file, each value sealed with AES-256-GCM
// under the master key (the path is the additional data, so a value cannot be
// moved to another path).
type BoltStore struct {
	db *bolt.DB
	sealer
}

// sealer seals resources with AES-256-GCM under the master key, the path as
// additional data: whatever holds the store (a file, a database) never sees
// plaintext, and cannot move a value to another path.
type sealer struct{ aead cipher.AEAD }

func newSealer(masterKey []byte) (sealer, error) {
	if len(masterKey) != 32 {
		return sealer{}, fmt.Errorf("the master key must be 32 bytes, got %d", len(masterKey))
	}
	blk, err := aes.NewCipher(masterKey)
	if err != nil {
		return sealer{}, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return sealer{}, err
	}
	return sealer{aead}, nil
}

func (s sealer) seal(path string, data []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, data, []byte(path)), nil
}

func (s sealer) open(path string, v []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(v) < n {
		return nil, fmt.Errorf("%s: corrupt value", path)
	}
	pt, err := s.aead.Open(nil, v[:n], v[n:], []byte(path))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot decrypt (wrong master key or tampered store): %w", path, err)
	}
	return pt, nil
}

// OpenBoltStore opens (creating) the store at path with a 32-byte master key.
func OpenBoltStore(path string, masterKey []byte) (*BoltStore, error) {
	sl, err := newSealer(masterKey)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &BoltStore{db: db, sealer: sl}, nil
}

// Put implements Store; bbolt commits with fsync before returning.
func (s *BoltStore) Put(_ context.Context, path string, data []byte) error {
	sealed, err := s.seal(path, data)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(path), sealed) })
}

// Get implements Store.
func (s *BoltStore) Get(_ context.Context, path string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(path))
		if v == nil {
			return fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		pt, err := s.open(path, v)
		out = pt
		return err
	})
	return out, err
}

// List implements Store.
func (s *BoltStore) List(_ context.Context) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	sort.Strings(out)
	return out, err
}

// Delete implements Store.
func (s *BoltStore) Delete(_ context.Context, path string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b.Get([]byte(path)) == nil {
			return fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		return b.Delete([]byte(path))
	})
}

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }
