package attest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cachingGetter fetches AMD KDS / Intel PCS URLs, keeping bodies on disk by
// URL so that repeated verifications need no network. It implements
// go-sev-guest's trust.HTTPSGetter.
type cachingGetter struct {
	client *http.Client
	dir    string
}

func (o *Options) getter() *cachingGetter {
	c := o.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	return &cachingGetter{client: c, dir: o.CacheDir}
}

func (g *cachingGetter) path(url string) string {
	s := sha256.Sum256([]byte(url))
	return filepath.Join(g.dir, hex.EncodeToString(s[:]))
}

// Get implements trust.HTTPSGetter.
func (g *cachingGetter) Get(url string) ([]byte, error) {
	return g.GetContext(context.Background(), url)
}

// GetContext implements trust.ContextHTTPSGetter.
func (g *cachingGetter) GetContext(ctx context.Context, url string) ([]byte, error) {
	// Certificates are cached; revocation lists must stay fresh.
	cache := g.dir != "" && !strings.Contains(strings.ToLower(url), "crl")
	if cache {
		if b, err := os.ReadFile(g.path(url)); err == nil {
			return b, nil
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w (for offline verification give the certificates and use --offline)", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if cache {
		if err := os.MkdirAll(g.dir, 0o700); err == nil {
			_ = os.WriteFile(g.path(url), b, 0o644)
		}
	}
	return b, nil
}
