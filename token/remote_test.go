package token

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// issuer serves a Signer's JWKS and counts the fetches.
type issuer struct {
	*Signer
	fetches atomic.Int32
	srv     *httptest.Server
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	s, err := NewSigner(filepath.Join(t.TempDir(), "keys.json"), jose.ES256, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{Signer: s}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		is.fetches.Add(1)
		json.NewEncoder(w).Encode(is.JWKS())
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) token(t *testing.T, now time.Time) string {
	t.Helper()
	tok, err := is.Sign(&EAR{Profile: Profile, IssuedAt: now.Unix(), Expiry: now.Add(time.Hour).Unix(),
		Submods: map[string]Appraisal{"cpu0": {Status: "affirming"}}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestRemoteKeySetFollowsRotation: after the issuer rotates its signing key,
// a token under the new key verifies (the cache refetches on an unknown
// kid); unknown kids are fetched for at most once per MinRefresh; the cache
// expires after TTL.
func TestRemoteKeySetFollowsRotation(t *testing.T) {
	is := newIssuer(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ks := &RemoteKeySet{URL: is.srv.URL, TTL: 10 * time.Minute, MinRefresh: 30 * time.Second, Now: clock}
	verify := func(tok string) error {
		_, err := Verify(context.Background(), tok, VerifyOptions{Keys: ks, Now: clock()})
		return err
	}
	if err := verify(is.token(t, clock())); err != nil {
		t.Fatal(err)
	}
	if n := is.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for the first token", n)
	}
	for i := 0; i < 5; i++ {
		if err := verify(is.token(t, clock())); err != nil {
			t.Fatal(err)
		}
	}
	if n := is.fetches.Load(); n != 1 {
		t.Errorf("%d fetches for tokens under a cached key; want 1", n)
	}
	// The issuer rotates: a token under the new key verifies after one
	// fetch, once MinRefresh has passed since the last.
	if err := is.Rotate(); err != nil {
		t.Fatal(err)
	}
	advance(31 * time.Second)
	if err := verify(is.token(t, clock())); err != nil {
		t.Fatalf("token under the rotated key: %v", err)
	}
	if n := is.fetches.Load(); n != 2 {
		t.Errorf("%d fetches after rotation; want 2", n)
	}
	// A flood of unknown kids costs at most one fetch per MinRefresh.
	other := newIssuer(t)
	for i := 0; i < 100; i++ {
		if err := verify(other.token(t, clock())); !errors.Is(err, ErrInvalid) {
			t.Fatalf("a token from another issuer: %v", err)
		}
	}
	if n := is.fetches.Load(); n > 3 {
		t.Errorf("%d fetches for 100 unknown kids within MinRefresh; want at most 3", n)
	}
	// TTL: a cached key is fetched again once the set is older than TTL.
	before := is.fetches.Load()
	advance(11 * time.Minute)
	if err := verify(is.token(t, clock())); err != nil {
		t.Fatal(err)
	}
	if is.fetches.Load() != before+1 {
		t.Errorf("no refetch after TTL (%d -> %d)", before, is.fetches.Load())
	}
	// While the issuer is down, the keys in hand still verify until TTL.
	is.srv.Close()
	advance(time.Minute)
	if err := verify(is.token(t, clock())); err != nil {
		t.Errorf("issuer down, cached key: %v", err)
	}
}
