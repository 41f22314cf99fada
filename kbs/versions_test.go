package kbs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"

	"cocoon.dev/cocoon/internal/testpg"
)

var testMaster = bytes.Repeat([]byte{5}, 32)

// stores are the Store implementations, each with a way to swap two
// versions' stored values behind its back (what whoever holds the file or
// the database could do).
func stores(t *testing.T) map[string]struct {
	s    Store
	swap func(path string, a, b int)
} {
	t.Helper()
	bs, err := OpenBoltStore(filepath.Join(t.TempDir(), "db"), testMaster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	url := testpg.Start(t).Database(t)
	pg, err := OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	ps, _ := pg.Store(testMaster)
	return map[string]struct {
		s    Store
		swap func(path string, a, b int)
	}{
		"bolt": {bs, func(path string, a, b int) {
			err := bs.db.Update(func(tx *bolt.Tx) error {
				pb := tx.Bucket(versionsBucket).Bucket([]byte(path))
				va, vb := append([]byte(nil), pb.Get(versionKey(a))...), append([]byte(nil), pb.Get(versionKey(b))...)
				if err := pb.Put(versionKey(a), vb); err != nil {
					return err
				}
				return pb.Put(versionKey(b), va)
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		"postgres": {ps, func(path string, a, b int) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `UPDATE kbs_resources r SET sealed = o.sealed FROM kbs_resources o
				WHERE r.path = $1 AND o.path = $1 AND ((r.version = $2 AND o.version = $3) OR (r.version = $3 AND o.version = $2))`, path, a, b); err != nil {
				t.Fatal(err)
			}
		}},
	}
}

// TestVersions: puts make versions; a release takes the newest enabled one
// or a pinned one; a disabled version is not released; a value moved to
// another version (a rollback by whoever holds the store) does not open.
func TestVersions(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := st.s
			for i, want := range []int{1, 2, 3} {
				if v, err := s.Put(ctx, "app/key/db", []byte(fmt.Sprintf("value-%d", i+1)), PutOptions{}); err != nil || v.Version != want {
					t.Fatalf("put %d: version %d %v", i+1, v.Version, err)
				}
			}
			get := func(pin int) (string, int, error) {
				b, v, err := s.Get(ctx, "app/key/db", pin)
				return string(b), v, err
			}
			if got, v, err := get(0); got != "value-3" || v != 3 || err != nil {
				t.Fatalf("newest: %q %d %v", got, v, err)
			}
			if got, v, err := get(1); got != "value-1" || v != 1 || err != nil {
				t.Fatalf("pinned 1: %q %d %v", got, v, err)
			}
			if err := s.SetDisabled(ctx, "app/key/db", 3, true); err != nil {
				t.Fatal(err)
			}
			if got, v, err := get(0); got != "value-2" || v != 2 || err != nil {
				t.Fatalf("newest with 3 disabled: %q %d %v", got, v, err)
			}
			if _, _, err := get(3); !errors.Is(err, ErrNotFound) {
				t.Fatalf("disabled 3 pinned: %v", err)
			}
			vs, err := s.Versions(ctx, "app/key/db")
			if err != nil || len(vs) != 3 || !vs[2].Disabled || vs[0].Disabled || vs[0].N != 1 {
				t.Fatalf("versions: %+v %v", vs, err)
			}
			if err := s.SetDisabled(ctx, "app/key/db", 3, false); err != nil {
				t.Fatal(err)
			}
			if err := s.SetDisabled(ctx, "app/key/db", 9, true); !errors.Is(err, ErrNotFound) {
				t.Errorf("disable a version that does not exist: %v", err)
			}
			st.swap("app/key/db", 1, 3)
			if got, _, err := get(0); err == nil {
				t.Fatalf("version 1's value in version 3's place opened: %q", got)
			}
			if l, err := s.List(ctx); err != nil || len(l) != 1 {
				t.Fatalf("list: %v %v", l, err)
			}
			if err := s.Delete(ctx, "app/key/db"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := get(1); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after delete: %v", err)
			}
		})
	}
}

// TestBoltLegacyValues: a store written before versions (one sealed value
// per path) opens with each value as its version 1.
func TestBoltLegacyValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	sl, _ := newSealer(testMaster)
	sealed, _ := sl.seal("app/key/old", 1, []byte("from before versions"))
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(legacyBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte("app/key/old"), sealed)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenBoltStore(path, testMaster)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, v, err := s.Get(context.Background(), "app/key/old", 0)
	if err != nil || v != 1 || string(b) != "from before versions" {
		t.Fatalf("legacy value: %q %d %v", b, v, err)
	}
	if v, err := s.Put(context.Background(), "app/key/old", []byte("new"), PutOptions{}); err != nil || v.Version != 2 {
		t.Fatalf("put after migration: %d %v", v.Version, err)
	}
}

// TestOneShot: a one-shot version is released once however many ask at
// once (with PostgreSQL, through two pools as two replicas would); the
// admin can still read it; Versions reports it spent; versions that are
// not one-shot, and a newer version put after it, release as often as
// asked.
func TestOneShot(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := st.s
			if _, err := s.Put(ctx, "app/key/boot", []byte("plain"), PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if v, err := s.Put(ctx, "app/key/boot", []byte("once-only"), PutOptions{OneShot: true}); err != nil || v.Version != 2 {
				t.Fatalf("put one-shot: %d %v", v.Version, err)
			}
			others := []Store{s}
			if pg, ok := s.(*PGStore); ok {
				// A second replica's own connections.
				p2, err := OpenPostgres(ctx, pg.p.pool.Config().ConnString())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(p2.Close)
				s2, _ := p2.Store(testMaster)
				others = append(others, s2)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			got, spent := 0, 0
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					b, v, err := others[i%len(others)].Release(ctx, "app/key/boot", 0)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil && string(b) == "once-only" && v == 2:
						got++
					case errors.Is(err, ErrReleased) && v == 2:
						spent++
					default:
						t.Errorf("release: %q %d %v", b, v, err)
					}
				}()
			}
			wg.Wait()
			if got != 1 || spent != 15 {
				t.Fatalf("one-shot released %d times, refused %d (want 1 and 15)", got, spent)
			}
			if b, _, err := s.Release(ctx, "app/key/boot", 2); !errors.Is(err, ErrReleased) || b != nil {
				t.Errorf("pinned after release: %q %v", b, err)
			}
			if b, _, err := s.Get(ctx, "app/key/boot", 0); err != nil || string(b) != "once-only" {
				t.Errorf("admin get: %q %v", b, err)
			}
			vs, err := s.Versions(ctx, "app/key/boot")
			if err != nil || len(vs) != 2 || vs[0].OneShot || !vs[1].OneShot || !vs[1].Released {
				t.Errorf("versions: %+v %v", vs, err)
			}
			for i := 0; i < 2; i++ {
				if b, _, err := s.Release(ctx, "app/key/boot", 1); err != nil || string(b) != "plain" {
					t.Errorf("version 1, release %d: %q %v", i, b, err)
				}
			}
			if _, err := s.Put(ctx, "app/key/boot", []byte("next"), PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if b, v, err := s.Release(ctx, "app/key/boot", 0); err != nil || string(b) != "next" || v != 3 {
				t.Errorf("after a new version: %q %d %v", b, v, err)
			}
		})
	}
}

// TestAdminKeysReseal: a master-key rotation's reseal authenticates the
// admin keys under the new key; before it the new key reads them as a
// readable one, after it the old key alone no longer does.
func TestAdminKeysReseal(t *testing.T) {
	ctx := context.Background()
	p, err := OpenPostgres(ctx, testpg.Start(t).Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	oldKey, newKey := testMaster, bytes.Repeat([]byte{6}, 32)
	old, _ := p.AdminKeys(oldKey)
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := old.AddAdminKey(ctx, "admin", pub); err != nil {
		t.Fatal(err)
	}
	onlyNew, _ := p.AdminKeys(newKey)
	if _, err := onlyNew.AdminKeys(ctx); err == nil {
		t.Fatal("a key under another master key was read")
	}
	rotating, _ := p.AdminKeys(newKey, oldKey)
	if ks, err := rotating.AdminKeys(ctx); err != nil || len(ks) != 1 {
		t.Fatalf("during the rotation: %v %v", ks, err)
	}
	if n, err := rotating.Reseal(ctx); err != nil || n != 1 {
		t.Fatalf("reseal: %d %v", n, err)
	}
	if n, err := rotating.Reseal(ctx); err != nil || n != 0 {
		t.Fatalf("second reseal: %d %v", n, err)
	}
	if ks, err := onlyNew.AdminKeys(ctx); err != nil || len(ks) != 1 || !ks[0].Key.Equal(pub) {
		t.Fatalf("after the reseal, the new key alone: %v %v", ks, err)
	}
	if _, err := old.AdminKeys(ctx); err == nil {
		t.Fatal("after the reseal the old key alone still reads the admin keys")
	}
}

// TestReleaseCache: a replica serves releases from its cache and drops an
// entry when any writer changes the path — another replica's put, or SQL
// run by hand against the database (the trigger notifies) — and caches
// nothing while it is not listening (its listener's connection killed).
func TestReleaseCache(t *testing.T) {
	ctx := context.Background()
	url := testpg.Start(t).Database(t)
	open := func() *PGStore {
		p, err := OpenPostgres(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		s, _ := p.Store(testMaster)
		return s
	}
	a, b := open(), open()
	listening := func(s *PGStore, want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s.cache.mu.Lock()
			on := s.cache.listening
			s.cache.mu.Unlock()
			if on == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("listening stayed %v", on)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	listening(b, true)
	release := func(s *PGStore) string {
		t.Helper()
		v, _, err := s.Release(ctx, "app/key/c", 0)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	// eventually waits for b to serve want (a notification's delay).
	eventually := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := release(b); got != want; got = release(b) {
			if time.Now().After(deadline) {
				t.Fatalf("b still serves %q, want %q", got, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := a.Put(ctx, "app/key/c", []byte("one"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// A read that raced the put's own notification is not cached: ask
	// until one is.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := release(b); got != "one" {
			t.Fatalf("first release: %q", got)
		}
		if _, ok := b.cache.get("app/key/c", 0); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no release was cached")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := a.Put(ctx, "app/key/c", []byte("two"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("two")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE kbs_resources SET disabled = true WHERE path = 'app/key/c' AND version = 2`); err != nil {
		t.Fatal(err)
	}
	eventually("one")
	// The listeners' connections killed: b stops trusting its cache.
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	listening(b, false)
	if _, err := conn.Exec(ctx, `UPDATE kbs_resources SET disabled = false WHERE path = 'app/key/c' AND version = 2`); err != nil {
		t.Fatal(err)
	}
	if got := release(b); got != "two" {
		t.Fatalf("with the listener down: %q, want the database's %q", got, "two")
	}
	listening(b, true) // back within a second
	eventually("two")
}

// TestReleaseCacheBounds: the cache keeps no value over its per-value
// bound and never more bytes than its total bound.
func TestReleaseCacheBounds(t *testing.T) {
	var c resourceCache
	c.setListening(true)
	c.put(c.generation(), "a/b/big", 0, cachedValue{sealed: make([]byte, maxCachedValue+1), version: 1})
	if _, ok := c.get("a/b/big", 0); ok {
		t.Fatal("a value over the bound was cached")
	}
	for i := 0; i < 2*maxCachedBytes/maxCachedValue; i++ {
		c.put(c.generation(), fmt.Sprintf("a/b/v%d", i), 0, cachedValue{sealed: make([]byte, maxCachedValue), version: 1})
		if c.bytes > maxCachedBytes || c.bytes != len(c.m)*maxCachedValue {
			t.Fatalf("after %d puts: %d bytes in %d entries", i+1, c.bytes, len(c.m))
		}
	}
	c.invalidate("")
	if c.bytes != 0 || len(c.m) != 0 {
		t.Fatalf("after invalidating everything: %d bytes, %d entries", c.bytes, len(c.m))
	}
}

// TestIdempotentPut: a put sent again with its request id stores nothing
// and answers the first send's version; the id reused for another value
// or other options is refused with nothing stored; ids are per path, and
// deleting the path forgets them.
func TestIdempotentPut(t *testing.T) {
	ctx := context.Background()
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			s := st.s
			versions := func(path string) int {
				t.Helper()
				vs, err := s.Versions(ctx, path)
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatal(err)
				}
				return len(vs)
			}
			put := func(path, value, id string, oneShot bool) (PutResult, error) {
				return s.Put(ctx, path, []byte(value), PutOptions{RequestID: id, OneShot: oneShot})
			}
			if r, err := put("app/key/a", "one", "req-1", false); err != nil || r != (PutResult{Version: 1}) {
				t.Fatalf("first put: %+v %v", r, err)
			}
			for _, tc := range []struct {
				name, path, value, id string
				oneShot               bool
				want                  PutResult
				wantErr               error
				versions              int
			}{
				{name: "sent again", path: "app/key/a", value: "one", id: "req-1", want: PutResult{Version: 1, Replayed: true}, versions: 1},
				{name: "another value", path: "app/key/a", value: "two", id: "req-1", wantErr: ErrRequestReused, versions: 1},
				{name: "a prefix of the value", path: "app/key/a", value: "on", id: "req-1", wantErr: ErrRequestReused, versions: 1},
				{name: "now one-shot", path: "app/key/a", value: "one", id: "req-1", oneShot: true, wantErr: ErrRequestReused, versions: 1},
				{name: "a fresh id", path: "app/key/a", value: "one", id: "req-2", want: PutResult{Version: 2}, versions: 2},
				{name: "no id", path: "app/key/a", value: "one", want: PutResult{Version: 3}, versions: 3},
				{name: "the id on another path", path: "app/key/b", value: "one", id: "req-1", want: PutResult{Version: 1}, versions: 1},
			} {
				r, err := put(tc.path, tc.value, tc.id, tc.oneShot)
				if !errors.Is(err, tc.wantErr) || r != tc.want {
					t.Errorf("%s: %+v %v, want %+v %v", tc.name, r, err, tc.want, tc.wantErr)
				}
				if n := versions(tc.path); n != tc.versions {
					t.Errorf("%s: %d versions of %s, want %d", tc.name, n, tc.path, tc.versions)
				}
			}
			// A version disabled since is still the one the id stored.
			if err := s.SetDisabled(ctx, "app/key/a", 1, true); err != nil {
				t.Fatal(err)
			}
			if r, err := put("app/key/a", "one", "req-1", false); err != nil || r != (PutResult{Version: 1, Replayed: true}) {
				t.Errorf("sent again after disabling: %+v %v", r, err)
			}
			if err := s.Delete(ctx, "app/key/a"); err != nil {
				t.Fatal(err)
			}
			if r, err := put("app/key/a", "fresh", "req-1", false); err != nil || r != (PutResult{Version: 1}) {
				t.Errorf("after delete: %+v %v", r, err)
			}
			if got, _, err := s.Get(ctx, "app/key/a", 0); err != nil || string(got) != "fresh" {
				t.Errorf("after delete: %q %v", got, err)
			}
			// Sent at once from many clients: one version.
			var wg sync.WaitGroup
			results := make([]PutResult, 8)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := put("app/key/c", "racing", "req-race", true)
					if err != nil {
						t.Errorf("racing put %d: %v", i, err)
					}
					results[i] = r
				}()
			}
			wg.Wait()
			stored := 0
			for _, r := range results {
				if r.Version != 1 {
					t.Errorf("racing put answered version %d", r.Version)
				}
				if !r.Replayed {
					stored++
				}
			}
			if stored != 1 || versions("app/key/c") != 1 {
				t.Errorf("racing puts stored %d times, %d versions", stored, versions("app/key/c"))
			}
		})
	}
}
