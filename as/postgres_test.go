package as

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"

	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/tee/sim"
	"cocoon.dev/cocoon/token"
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

// failingKeys refuses to publish.
type failingKeys struct{ KeyDirectory }

func (failingKeys) Publish(context.Context, jose.JSONWebKeySet) error {
	return errors.New("the directory is down")
}

// TestKeyDirectoryAcrossReplicas: two services with keys of their own share
// a key directory: a token either signs verifies with the JWKS the other
// serves; a rotated key is in the other's JWKS as soon as the rotation
// answers (it was published before it signed), and a rotation whose key
// cannot be published changes nothing; a key written into the database
// without the replicas' MAC is not served.
func TestKeyDirectoryAcrossReplicas(t *testing.T) {
	url := testpg.Start(t).Database(t)
	var dirs []*PGKeys
	replica := func() *fixture {
		n, err := OpenPGNonces(context.Background(), url, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		k, err := n.Keys([]byte("admin-secret-shared-by-replicas"))
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, k)
		return newFixture(t, func(c *Config) { c.Nonces, c.Keys = n, k })
	}
	a, b := replica(), replica()
	kids := func(f *fixture) map[string]bool {
		out := map[string]bool{}
		for _, k := range f.keySet(t).Keys {
			out[k.KeyID] = true
		}
		return out
	}
	if !kids(b)[a.signer.KeyID()] || !kids(a)[b.signer.KeyID()] {
		t.Fatal("a replica's JWKS lacks the other's key")
	}
	code, out := a.post(t, "/attestation", simRequest(t, a.nonce(t), sim.Launch{}))
	if code != 200 {
		t.Fatalf("attest on A: %d %v", code, out)
	}
	if _, err := token.Verify(context.Background(), out["token"].(string), token.VerifyOptions{KeySet: b.keySet(t)}); err != nil {
		t.Fatalf("A's token with B's JWKS: %v", err)
	}
	adminPost := func(f *fixture, path string) int {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer admin-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	old := a.signer.KeyID()
	if c := adminPost(a, "/admin/rotate-key"); c != 200 {
		t.Fatalf("rotate: %d", c)
	}
	if a.signer.KeyID() == old || !kids(b)[a.signer.KeyID()] {
		t.Fatal("the rotated key is not in B's JWKS when the rotation answered")
	}
	// A directory that cannot publish: the rotation fails, the key stays.
	c := newFixture(t, func(cfg *Config) { cfg.Keys = failingKeysAfterStart{dirs[0]} })
	before := c.signer.KeyID()
	if code := adminPost(c, "/admin/rotate-key"); code != 500 || c.signer.KeyID() != before {
		t.Fatalf("rotation with an unreachable directory: %d, key %s -> %s", code, before, c.signer.KeyID())
	}
	// A key the replicas did not write.
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `INSERT INTO as_signing_keys (kid, jwk, seen, mac) VALUES ('evil', '{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"evil"}', now(), '\x00')`); err != nil {
		t.Fatal(err)
	}
	if kids(b)["evil"] {
		t.Fatal("a key without the replicas' MAC is in the JWKS")
	}
	// A directory that cannot be read: the JWKS still serves the
	// replica's own keys (its tokens verify), not an error.
	d := newFixture(t, func(cfg *Config) { cfg.Keys = unreadableKeys{dirs[0]} })
	if ks := kids(d); !ks[d.signer.KeyID()] || ks[a.signer.KeyID()] {
		t.Fatalf("JWKS with the directory down: %v", ks)
	}
}

// unreadableKeys publishes through the real directory and cannot read it.
type unreadableKeys struct{ *PGKeys }

func (unreadableKeys) Published(context.Context, time.Time) (jose.JSONWebKeySet, error) {
	return jose.JSONWebKeySet{}, errors.New("the directory is down")
}

// failingKeysAfterStart publishes at start (through the real directory)
// and fails every later publication.
type failingKeysAfterStart struct{ *PGKeys }

func (f failingKeysAfterStart) Publish(ctx context.Context, set jose.JSONWebKeySet) error {
	if len(set.Keys) > 1 {
		return failingKeys{}.Publish(ctx, set)
	}
	return f.PGKeys.Publish(ctx, set)
}
