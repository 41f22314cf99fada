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
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"cocoon.dev/cocoon/kbs/protocol"
)

// Store keeps resources by path ("repo/type/tag"), each in numbered
// versions: a put makes the next version, a release takes the newest one
// not disabled (or a pinned one), so a secret is rotated by putting its new
// value and disabling the old. Put returns only after the version is
// durable. BoltStore is the embedded default; PGStore is shared by replicas.
type Store interface {
	// Put stores data as the path's next version and returns its number.
	// A put whose opt.RequestID names a version of the path already stored
	// stores nothing and answers that version (Replayed), or ErrRequestReused
	// when that version holds other data or options.
	Put(ctx context.Context, path string, data []byte, opt PutOptions) (PutResult, error)
	// Get returns the data of version (0: the newest enabled one) and its
	// number, for the admin. A disabled version is not found.
	Get(ctx context.Context, path string, version int) ([]byte, int, error)
	// Release is Get for a release to a workload: a one-shot version is
	// marked released in the same transaction, and one already released
	// answers ErrReleased, whichever replica released it.
	Release(ctx context.Context, path string, version int) ([]byte, int, error)
	// Versions lists the path's versions, oldest first.
	Versions(ctx context.Context, path string) ([]protocol.ResourceVersion, error)
	// SetDisabled disables (or enables again) one version.
	SetDisabled(ctx context.Context, path string, version int, disabled bool) error
	List(ctx context.Context) ([]string, error)
	// Delete removes every version of the path.
	Delete(ctx context.Context, path string) error
	Close() error
}

// ErrNotFound marks a resource (or version) that does not exist or is
// disabled.
var ErrNotFound = errors.New("no such resource")

// ErrReleased marks a one-shot version that was released already.
var ErrReleased = errors.New("a one-shot version, released already")

// PutOptions are a new version's attributes.
type PutOptions struct {
	// OneShot versions are released once, to the first attested workload
	// the release policy allows, across every replica; later requests are
	// refused (put a new version to release again).
	OneShot bool
	// RequestID makes the put idempotent (an HTTP Idempotency-Key): the
	// same put sent again with it — by a client whose first answer was
	// lost, to any replica — stores no second version. Empty: every put
	// stores a version.
	RequestID string
}

// PutResult is what a put stored.
type PutResult struct {
	Version int
	// Replayed: the request id named a version stored before; nothing
	// was stored now.
	Replayed bool
}

// ErrRequestReused marks a put whose request id names a version holding
// another value or options: the id was reused for another put.
var ErrRequestReused = errors.New("the request id was used for another put")

// replay decides a put whose request id names a stored version of the
// path: the same value and options answer it; anything else is
// ErrRequestReused. The values are compared in constant time.
func replay(path string, version int, stored []byte, storedOneShot bool, data []byte, opt PutOptions) (PutResult, error) {
	if storedOneShot != opt.OneShot || subtle.ConstantTimeCompare(stored, data) != 1 {
		return PutResult{}, fmt.Errorf("%s: request id %q stored version %d with another value or options: %w", path, opt.RequestID, version, ErrRequestReused)
	}
	return PutResult{Version: version, Replayed: true}, nil
}

// legacyBucket held one value per path before resources had versions; it
// is moved into versions (as version 1) when the store opens.
var (
	legacyBucket   = []byte("resources")
	versionsBucket = []byte("versions")
	// requestsBucket holds, per path, the versions puts with a request
	// id stored: request id -> 8-byte version.
	requestsBucket = []byte("requests")
)

// additional is the additional data a version is sealed with: the path
// (version 1, as before versions existed), then the version, so that a
// value cannot be moved to another path or version (the store cannot roll
// a resource back by swapping its versions' values).
func additional(path string, version int) []byte {
	if version == 1 {
		return []byte(path)
	}
	return []byte(path + "\x00" + strconv.Itoa(version))
}

// BoltStore is a Store in a bbolt file, each value sealed with AES-256-GCM
// under the master key (the path is the additional data, so a value cannot be
// moved to another path).
type BoltStore struct {
	db *bolt.DB
	sealer
}

// sealer seals resources with AES-256-GCM under the master key, the path
// (and version) as additional data: whatever holds the store (a file, a
// database) never sees plaintext, and cannot move a value to another path
// or version. During a master-key rotation it also opens values sealed
// under the other keys it is given (readable); it seals under the master
// key only.
type sealer struct {
	aead     cipher.AEAD
	readable []cipher.AEAD
}

func gcm(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("a master key is 32 bytes, got %d", len(key))
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func newSealer(masterKey []byte, readable ...[]byte) (sealer, error) {
	aead, err := gcm(masterKey)
	if err != nil {
		return sealer{}, fmt.Errorf("the master key: %w", err)
	}
	s := sealer{aead: aead}
	for i, k := range readable {
		a, err := gcm(k)
		if err != nil {
			return sealer{}, fmt.Errorf("readable key %d: %w", i+1, err)
		}
		s.readable = append(s.readable, a)
	}
	return s, nil
}

func (s sealer) seal(path string, version int, data []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, data, additional(path, version)), nil
}

func (s sealer) open(path string, version int, v []byte) ([]byte, error) {
	pt, _, err := s.openWhich(path, version, v)
	return pt, err
}

// openWhich opens v and says whether the master key sealed it. GCM's tag
// tells the key: a value opens under the key that sealed it only.
func (s sealer) openWhich(path string, version int, v []byte) ([]byte, bool, error) {
	n := s.aead.NonceSize()
	if len(v) < n {
		return nil, false, fmt.Errorf("%s: corrupt value", path)
	}
	ad := additional(path, version)
	if pt, err := s.aead.Open(nil, v[:n], v[n:], ad); err == nil {
		return pt, true, nil
	}
	for _, a := range s.readable {
		if pt, err := a.Open(nil, v[:n], v[n:], ad); err == nil {
			return pt, false, nil
		}
	}
	return nil, false, fmt.Errorf("%s version %d: cannot decrypt (another master key, or a tampered store)", path, version)
}

// ResealResult says what a Reseal did.
type ResealResult struct {
	Values   int `json:"values"`   // versions looked at
	Resealed int `json:"resealed"` // sealed again under the master key
}

// Both stores reseal.
var (
	_ Resealer = (*BoltStore)(nil)
	_ Resealer = (*PGStore)(nil)
)

// Resealer seals every stored value again under the master key (the last
// step of a master-key rotation). It can be interrupted and run again:
// values already under the master key are left as they are.
type Resealer interface {
	Reseal(ctx context.Context) (ResealResult, error)
}

// OpenBoltStore opens (creating) the store at path with a 32-byte master
// key; readable are further keys whose values it opens (a rotation's other
// key) but never seals with.
func OpenBoltStore(path string, masterKey []byte, readable ...[]byte) (*BoltStore, error) {
	sl, err := newSealer(masterKey, readable...)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.Update(migrateBolt); err != nil {
		db.Close()
		return nil, err
	}
	return &BoltStore{db: db, sealer: sl}, nil
}

// migrateBolt makes the versions bucket and moves values from before
// versions into it as version 1 (sealed alike), in one transaction.
func migrateBolt(tx *bolt.Tx) error {
	vb, err := tx.CreateBucketIfNotExists(versionsBucket)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(requestsBucket); err != nil {
		return err
	}
	old := tx.Bucket(legacyBucket)
	if old == nil {
		return nil
	}
	if err := old.ForEach(func(k, v []byte) error {
		pb, err := vb.CreateBucketIfNotExists(k)
		if err != nil {
			return err
		}
		return pb.Put(versionKey(1), append([]byte{0}, v...))
	}); err != nil {
		return err
	}
	return tx.DeleteBucket(legacyBucket)
}

// A path's bucket holds its versions: the 8-byte big-endian number, then
// a flags byte (1: disabled) and the sealed value.
func versionKey(v int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

// The flags byte's bits.
const (
	flagDisabled = 1 << iota
	flagOneShot
	flagReleased
)

// Put implements Store; bbolt commits with fsync before returning.
func (s *BoltStore) Put(_ context.Context, path string, data []byte, opt PutOptions) (PutResult, error) {
	var res PutResult
	err := s.db.Update(func(tx *bolt.Tx) error {
		pb, err := tx.Bucket(versionsBucket).CreateBucketIfNotExists([]byte(path))
		if err != nil {
			return err
		}
		var rb *bolt.Bucket
		if opt.RequestID != "" {
			if rb, err = tx.Bucket(requestsBucket).CreateBucketIfNotExists([]byte(path)); err != nil {
				return err
			}
			if k := rb.Get([]byte(opt.RequestID)); k != nil {
				v := pb.Get(k)
				n := int(binary.BigEndian.Uint64(k))
				if v == nil {
					return fmt.Errorf("%s: request id %q names version %d, which is gone", path, opt.RequestID, n)
				}
				pt, err := s.open(path, n, v[1:])
				if err != nil {
					return err
				}
				defer clear(pt)
				res, err = replay(path, n, pt, v[0]&flagOneShot != 0, data, opt)
				return err
			}
		}
		version := 1
		if k, _ := pb.Cursor().Last(); k != nil {
			version = int(binary.BigEndian.Uint64(k)) + 1
		}
		sealed, err := s.seal(path, version, data)
		if err != nil {
			return err
		}
		var flags byte
		if opt.OneShot {
			flags |= flagOneShot
		}
		if rb != nil {
			if err := rb.Put([]byte(opt.RequestID), versionKey(version)); err != nil {
				return err
			}
		}
		res = PutResult{Version: version}
		return pb.Put(versionKey(version), append([]byte{flags}, sealed...))
	})
	return res, err
}

// Get implements Store.
func (s *BoltStore) Get(_ context.Context, path string, version int) ([]byte, int, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v, n, err := pickVersion(tx, path, version)
		if err != nil {
			return err
		}
		version = n
		out, err = s.open(path, version, v[1:])
		return err
	})
	return out, version, err
}

// Release implements Store: a one-shot version is marked in a write
// transaction (bbolt has one writer at a time), others are read.
func (s *BoltStore) Release(_ context.Context, path string, version int) ([]byte, int, error) {
	var out []byte
	oneShot := false
	err := s.db.View(func(tx *bolt.Tx) error {
		v, n, err := pickVersion(tx, path, version)
		if err != nil {
			return err
		}
		// The version picked here is the one released: a newer one put
		// before the write transaction does not change it.
		version = n
		if v[0]&flagOneShot != 0 {
			oneShot = true
			return nil
		}
		out, err = s.open(path, version, v[1:])
		return err
	})
	if err != nil || !oneShot {
		return out, version, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		v, n, err := pickVersion(tx, path, version)
		if err != nil {
			return err
		}
		version = n
		if v[0]&flagReleased != 0 {
			return fmt.Errorf("%s version %d: %w", path, version, ErrReleased)
		}
		if out, err = s.open(path, version, v[1:]); err != nil {
			return err
		}
		nv := append([]byte(nil), v...)
		nv[0] |= flagReleased
		return tx.Bucket(versionsBucket).Bucket([]byte(path)).Put(versionKey(version), nv)
	})
	if err != nil {
		clear(out)
		return nil, version, err
	}
	return out, version, nil
}

// pickVersion returns the stored value (flags byte first) of version, or
// of the newest enabled one for 0, and its number.
func pickVersion(tx *bolt.Tx, path string, version int) ([]byte, int, error) {
	pb := tx.Bucket(versionsBucket).Bucket([]byte(path))
	if pb == nil {
		return nil, 0, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	var v []byte
	if version > 0 {
		v = pb.Get(versionKey(version))
	} else {
		c := pb.Cursor()
		for k, val := c.Last(); k != nil; k, val = c.Prev() {
			if len(val) > 0 && val[0]&flagDisabled == 0 {
				version, v = int(binary.BigEndian.Uint64(k)), val
				break
			}
		}
	}
	if len(v) < 2 || v[0]&flagDisabled != 0 {
		return nil, version, fmt.Errorf("%s: no enabled version%s: %w", path, versionSuffix(version), ErrNotFound)
	}
	return v, version, nil
}

func versionSuffix(v int) string {
	if v > 0 {
		return " " + strconv.Itoa(v)
	}
	return ""
}

// Versions implements Store.
func (s *BoltStore) Versions(_ context.Context, path string) ([]protocol.ResourceVersion, error) {
	var out []protocol.ResourceVersion
	err := s.db.View(func(tx *bolt.Tx) error {
		pb := tx.Bucket(versionsBucket).Bucket([]byte(path))
		if pb == nil {
			return fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		return pb.ForEach(func(k, v []byte) error {
			var f byte
			if len(v) > 0 {
				f = v[0]
			}
			out = append(out, protocol.ResourceVersion{N: int(binary.BigEndian.Uint64(k)), Disabled: f&flagDisabled != 0,
				OneShot: f&flagOneShot != 0, Released: f&flagReleased != 0})
			return nil
		})
	})
	return out, err
}

// SetDisabled implements Store.
func (s *BoltStore) SetDisabled(_ context.Context, path string, version int, disabled bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		pb := tx.Bucket(versionsBucket).Bucket([]byte(path))
		var v []byte
		if pb != nil {
			v = pb.Get(versionKey(version))
		}
		if len(v) == 0 {
			return fmt.Errorf("%s version %d: %w", path, version, ErrNotFound)
		}
		nv := append([]byte(nil), v...)
		if disabled {
			nv[0] |= flagDisabled
		} else {
			nv[0] &^= flagDisabled
		}
		return pb.Put(versionKey(version), nv)
	})
}

// List implements Store.
func (s *BoltStore) List(_ context.Context) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(versionsBucket).ForEach(func(k, _ []byte) error {
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
		vb := tx.Bucket(versionsBucket)
		if vb.Bucket([]byte(path)) == nil {
			return fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		if rb := tx.Bucket(requestsBucket); rb.Bucket([]byte(path)) != nil {
			if err := rb.DeleteBucket([]byte(path)); err != nil {
				return err
			}
		}
		return vb.DeleteBucket([]byte(path))
	})
}

// Reseal implements Resealer, one path per transaction.
func (s *BoltStore) Reseal(ctx context.Context) (ResealResult, error) {
	var res ResealResult
	paths, err := s.List(ctx)
	if err != nil {
		return res, err
	}
	for _, path := range paths {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			pb := tx.Bucket(versionsBucket).Bucket([]byte(path))
			if pb == nil {
				return nil // deleted meanwhile
			}
			type kv struct{ k, v []byte }
			var redo []kv
			err := pb.ForEach(func(k, v []byte) error {
				if len(v) == 0 {
					return fmt.Errorf("%s: corrupt value", path)
				}
				res.Values++
				version := int(binary.BigEndian.Uint64(k))
				pt, current, err := s.openWhich(path, version, v[1:])
				if err != nil {
					return err
				}
				defer clear(pt)
				if current {
					return nil
				}
				sealed, err := s.seal(path, version, pt)
				if err != nil {
					return err
				}
				redo = append(redo, kv{append([]byte(nil), k...), append([]byte{v[0]}, sealed...)})
				return nil
			})
			if err != nil {
				return err
			}
			for _, e := range redo {
				if err := pb.Put(e.k, e.v); err != nil {
					return err
				}
				res.Resealed++
			}
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }
