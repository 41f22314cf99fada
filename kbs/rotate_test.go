package kbs

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"cocoon.dev/cocoon/internal/testpg"
)

// TestMasterKeyRotation plays the rotation on both stores: values sealed
// under K1 stay readable while K2 is readable, then current (new values
// under K2), then alone after a reseal; readers running through the reseal
// never miss a value; a second reseal has nothing to do; without the old
// key before the reseal, old values do not open.
func TestMasterKeyRotation(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ctx := context.Background()
	dir := t.TempDir()
	url := testpg.Start(t).Database(t)
	pg, err := OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	type opener func(master []byte, readable ...[]byte) (Store, func())
	for name, open := range map[string]opener{
		"bolt": func(master []byte, readable ...[]byte) (Store, func()) {
			s, err := OpenBoltStore(filepath.Join(dir, "db"), master, readable...)
			if err != nil {
				t.Fatal(err)
			}
			return s, func() { s.Close() }
		},
		"postgres": func(master []byte, readable ...[]byte) (Store, func()) {
			s, err := pg.Store(master, readable...)
			if err != nil {
				t.Fatal(err)
			}
			return s, func() {}
		},
	} {
		t.Run(name, func(t *testing.T) {
			want := map[string]string{}
			put := func(s Store, path, v string) {
				if _, err := s.Put(ctx, path, []byte(v), PutOptions{}); err != nil {
					t.Fatal(err)
				}
				want[path] = v
			}
			check := func(s Store, what string) error {
				for path, v := range want {
					got, _, err := s.Get(ctx, path, 0)
					if err != nil || string(got) != v {
						return fmt.Errorf("%s: %s = %q, %v", what, path, got, err)
					}
				}
				return nil
			}
			s, done := open(k1)
			put(s, "app/key/a", "a1")
			put(s, "app/key/a", "a2")
			put(s, "app/key/b", "b1")
			done()
			s, done = open(k2)
			if _, _, err := s.Get(ctx, "app/key/b", 0); err == nil {
				t.Fatal("a value sealed under K1 opened with K2 alone")
			}
			done()
			// Prepare: K2 readable everywhere, K1 still seals.
			s, done = open(k1, k2)
			put(s, "app/key/c", "c1")
			if err := check(s, "prepared"); err != nil {
				t.Fatal(err)
			}
			done()
			// Commit: K2 seals, K1 readable; then reseal under readers.
			s, done = open(k2, k1)
			put(s, "app/key/d", "d1")
			var readers sync.WaitGroup
			var failures atomic.Int32
			stop := make(chan struct{})
			for i := 0; i < 2; i++ {
				readers.Add(1)
				go func() {
					defer readers.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if err := check(s, "during the reseal"); err != nil {
							if failures.Add(1) == 1 {
								t.Error(err)
							}
							return
						}
					}
				}()
			}
			res, err := s.(Resealer).Reseal(ctx)
			close(stop)
			readers.Wait()
			if err != nil || res.Values != 5 || res.Resealed != 4 {
				t.Fatalf("reseal: %+v %v (want 5 values, the 4 under K1 resealed)", res, err)
			}
			if res, err := s.(Resealer).Reseal(ctx); err != nil || res.Resealed != 0 {
				t.Fatalf("second reseal: %+v %v", res, err)
			}
			done()
			// Finish: K2 alone.
			s, done = open(k2)
			defer done()
			if err := check(s, "K2 alone after the reseal"); err != nil {
				t.Fatal(err)
			}
		})
	}

	// The release policy's MAC follows the keys too.
	p1, _ := pg.Policies(k1)
	if _, err := p1.SetReleasePolicy(ctx, "package policy\ndefault allow := false\n"); err != nil {
		t.Fatal(err)
	}
	if p2, _ := pg.Policies(k2); func() error { _, _, err := p2.ReleasePolicy(ctx); return err }() == nil {
		t.Fatal("a policy authenticated under K1 verified under K2 alone")
	}
	p21, _ := pg.Policies(k2, k1)
	if done, err := p21.Reseal(ctx); err != nil || !done {
		t.Fatalf("policy reseal: %v %v", done, err)
	}
	p2, _ := pg.Policies(k2)
	if text, _, err := p2.ReleasePolicy(ctx); err != nil || text == "" {
		t.Fatalf("the policy under K2 alone after its reseal: %q %v", text, err)
	}
}
