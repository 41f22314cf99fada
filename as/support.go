package as

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// NonceStore issues single-use nonces that expire. The in-memory one serves
// one service; PGNonces lets replicas share them.
type NonceStore interface {
	// Issue makes a nonce and says when it expires.
	Issue(ctx context.Context) (string, time.Time, error)
	// Consume reports whether nonce was issued, unexpired and unused, and
	// uses it: once across everything sharing the store.
	Consume(ctx context.Context, nonce string) (bool, error)
}

// maxNonces bounds the outstanding challenges (POST /challenge is
// unauthenticated).
const maxNonces = 1 << 20

// errTooManyChallenges refuses a challenge while the store is full.
var errTooManyChallenges = errors.New("too many outstanding challenges")

func newNonce() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// nonceStore is the in-memory NonceStore.
type nonceStore struct {
	ttl    time.Duration
	now    func() time.Time
	max    int
	mu     sync.Mutex
	m      map[string]time.Time
	issued int
}

func newNonceStore(ttl time.Duration, max int, now func() time.Time) *nonceStore {
	if now == nil {
		now = time.Now
	}
	return &nonceStore{ttl: ttl, max: max, now: now, m: map[string]time.Time{}}
}

// Issue implements NonceStore.
func (n *nonceStore) Issue(context.Context) (string, time.Time, error) {
	s, err := newNonce()
	if err != nil {
		return "", time.Time{}, err
	}
	now := n.now()
	exp := now.Add(n.ttl)
	n.mu.Lock()
	defer n.mu.Unlock()
	// Sweep expired nonces now and then (amortized), and always when full.
	if n.issued++; n.issued%1024 == 0 || len(n.m) >= n.max {
		for k, e := range n.m {
			if now.After(e) {
				delete(n.m, k)
			}
		}
		if len(n.m) >= n.max {
			return "", time.Time{}, errTooManyChallenges
		}
	}
	n.m[s] = exp
	return s, exp, nil
}

// Consume implements NonceStore.
func (n *nonceStore) Consume(_ context.Context, nonce string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	exp, ok := n.m[nonce]
	if !ok {
		return false, nil
	}
	delete(n.m, nonce)
	return n.now().Before(exp), nil
}

// metrics are the service's Prometheus metrics, in the text format.
type metrics struct {
	mu       sync.Mutex
	requests map[string]int64 // "path code"
	verdicts map[string]int64
	buckets  []float64
	counts   map[string][]int64 // path -> bucket counts
	sums     map[string]float64
	totals   map[string]int64
}

func newMetrics() *metrics {
	return &metrics{
		requests: map[string]int64{}, verdicts: map[string]int64{},
		buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		counts:  map[string][]int64{}, sums: map[string]float64{}, totals: map[string]int64{},
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(c int) { w.code = c; w.ResponseWriter.WriteHeader(c) }

func (m *metrics) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: 200}
		h.ServeHTTP(sw, r)
		path := r.URL.Path
		if strings.HasPrefix(path, "/admin/") {
			path = "/admin"
		}
		d := time.Since(start).Seconds()
		m.mu.Lock()
		defer m.mu.Unlock()
		m.requests[fmt.Sprintf("%s %d", path, sw.code)]++
		c := m.counts[path]
		if c == nil {
			c = make([]int64, len(m.buckets))
			m.counts[path] = c
		}
		for i, b := range m.buckets {
			if d <= b {
				c[i]++
			}
		}
		m.sums[path] += d
		m.totals[path]++
	})
}

func (m *metrics) verdict(v string) {
	m.mu.Lock()
	m.verdicts[v]++
	m.mu.Unlock()
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

func (m *metrics) serve(w http.ResponseWriter, _ *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# HELP cocoon_as_requests_total HTTP requests by path and status code.")
	fmt.Fprintln(w, "# TYPE cocoon_as_requests_total counter")
	for _, k := range sortedKeys(m.requests) {
		path, code, _ := strings.Cut(k, " ")
		fmt.Fprintf(w, "cocoon_as_requests_total{path=%q,code=%q} %d\n", path, code, m.requests[k])
	}
	fmt.Fprintln(w, "# HELP cocoon_as_verdicts_total Attestation outcomes: affirming, warning, contraindicated, refused.")
	fmt.Fprintln(w, "# TYPE cocoon_as_verdicts_total counter")
	for _, k := range sortedKeys(m.verdicts) {
		fmt.Fprintf(w, "cocoon_as_verdicts_total{verdict=%q} %d\n", k, m.verdicts[k])
	}
	fmt.Fprintln(w, "# HELP cocoon_as_request_duration_seconds Request latency by path.")
	fmt.Fprintln(w, "# TYPE cocoon_as_request_duration_seconds histogram")
	for _, p := range sortedKeys(m.counts) {
		for i, b := range m.buckets {
			fmt.Fprintf(w, "cocoon_as_request_duration_seconds_bucket{path=%q,le=\"%g\"} %d\n", p, b, m.counts[p][i])
		}
		fmt.Fprintf(w, "cocoon_as_request_duration_seconds_bucket{path=%q,le=\"+Inf\"} %d\n", p, m.totals[p])
		fmt.Fprintf(w, "cocoon_as_request_duration_seconds_sum{path=%q} %g\n", p, m.sums[p])
		fmt.Fprintf(w, "cocoon_as_request_duration_seconds_count{path=%q} %d\n", p, m.totals[p])
	}
}
