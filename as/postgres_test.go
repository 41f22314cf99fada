package as

import (
	"context"
	"sync"
	"testing"

	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/tee/sim"
)

// TestNoncesAcrossReplicas: two attestation services on one real
// PostgreSQL: a nonce B issued is accepted by A, once; replayed on either,
// refused; one nonce given to both at once is accepted by one of them.
func TestNoncesAcrossReplicas(t *testing.T) {
	url := testpg.Start(t).Database(t)
	replica := func() *fixture {
		n, err := OpenPGNonces(context.Background(), url, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		return newFixture(t, func(c *Config) { c.Nonces = n })
	}
	a, b := replica(), replica()
	req := simRequest(t, b.nonce(t), sim.Launch{})
	if code, out := a.post(t, "/attestation", req); code != 200 || out["token"] == nil {
		t.Fatalf("B's nonce on A: %d %v", code, out)
	}
	for _, f := range []*fixture{a, b} {
		if code, out := f.post(t, "/attestation", req); code != 401 || out["type"] != "bad_nonce" {
			t.Errorf("replayed: %d %v", code, out)
		}
	}
	for i := 0; i < 8; i++ {
		req := simRequest(t, a.nonce(t), sim.Launch{})
		var wg sync.WaitGroup
		codes := make(chan int, 2)
		for _, f := range []*fixture{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _ := f.post(t, "/attestation", req)
				codes <- code
			}()
		}
		wg.Wait()
		close(codes)
		ok := 0
		for c := range codes {
			if c == 200 {
				ok++
			} else if c != 401 {
				t.Errorf("concurrent: status %d", c)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: the nonce was accepted %d times", i, ok)
		}
	}
}
