package token

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// KeySource gives the keys to verify a token signed with kid.
type KeySource interface {
	KeySet(ctx context.Context, kid string) (*jose.JSONWebKeySet, error)
}

// RemoteKeySet is an issuer's JWKS fetched from its URL and cached. A token
// signed with a key the cache does not hold (the issuer rotated) makes it
// fetch again, at most once per MinRefresh, so a stream of tokens with
// unknown kids cannot turn into a stream of fetches; the cache is also
// refreshed after TTL, so retired keys leave it.
type RemoteKeySet struct {
	URL    string
	Client *http.Client
	// TTL is how long a fetched set is used before it is fetched again
	// (default 10 minutes).
	TTL time.Duration
	// MinRefresh is the least time between two fetches (default 30 s).
	MinRefresh time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	mu      sync.Mutex
	set     *jose.JSONWebKeySet
	fetched time.Time // when set was fetched
	tried   time.Time // when a fetch was last tried
}

func (r *RemoteKeySet) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// KeySet returns the cached set when it is fresh and holds kid; otherwise
// it fetches the JWKS again, unless the last try was less than MinRefresh
// ago, in which case the cached set is returned as it is.
func (r *RemoteKeySet) KeySet(ctx context.Context, kid string) (*jose.JSONWebKeySet, error) {
	ttl, minRefresh := r.TTL, r.MinRefresh
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	if minRefresh <= 0 {
		minRefresh = 30 * time.Second
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	fresh := r.set != nil && now.Sub(r.fetched) < ttl
	if fresh && len(r.set.Key(kid)) > 0 {
		return r.set, nil
	}
	if !r.tried.IsZero() && now.Sub(r.tried) < minRefresh {
		if r.set == nil {
			return nil, fmt.Errorf("the issuer's keys (%s) could not be fetched; next try in %s", r.URL, (minRefresh - now.Sub(r.tried)).Round(time.Second))
		}
		return r.set, nil
	}
	r.tried = now
	set, err := LoadKeySet(ctx, r.URL, r.Client)
	if err != nil {
		if r.set != nil && fresh {
			return r.set, nil // keep serving the keys we have
		}
		return nil, err
	}
	r.set, r.fetched = set, now
	return set, nil
}

// StaticKeySet is a KeySource of fixed keys.
type StaticKeySet struct{ Set *jose.JSONWebKeySet }

// KeySet returns the fixed set.
func (s StaticKeySet) KeySet(context.Context, string) (*jose.JSONWebKeySet, error) { return s.Set, nil }
