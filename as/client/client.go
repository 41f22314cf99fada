// Package client is a client of cocoon's attestation service: it gets a
// challenge and sends evidence for a token, with timeouts (never the
// default client's unbounded wait).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"cocoon.dev/cocoon/internal/httpjson"
)

// Client talks to one attestation service.
type Client struct {
	// URL is the service's base URL.
	URL string
	// HTTP carries the requests (nil: a client with a 30 s timeout).
	HTTP *http.Client
}

// Attestation is the body of POST /attestation.
type Attestation struct {
	TEE string `json:"tee"`
	// Evidence is the evidence envelope's JSON, base64url.
	Evidence    string         `json:"evidence"`
	Nonce       string         `json:"nonce"`
	RuntimeData map[string]any `json:"runtime_data,omitempty"`
}

// Result is the service's answer to an attestation.
type Result struct {
	Token  string `json:"token"`
	Status string `json:"status"`
}

// Challenge gets a fresh nonce.
func (c *Client) Challenge(ctx context.Context) (string, error) {
	var out struct {
		Nonce string `json:"nonce"`
	}
	if err := c.post(ctx, "/challenge", nil, &out); err != nil {
		return "", err
	}
	if out.Nonce == "" {
		return "", fmt.Errorf("attestation service %s: the challenge has no nonce", c.URL)
	}
	return out.Nonce, nil
}

// Attest sends evidence and returns the token.
func (c *Client) Attest(ctx context.Context, a *Attestation) (*Result, error) {
	var r Result
	if err := c.post(ctx, "/attestation", a, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *Client) post(ctx context.Context, path string, body, out any) error {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	url := strings.TrimRight(c.URL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("attestation service: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("attestation service %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e httpjson.Error
		if json.Unmarshal(b, &e) == nil && e.Type != "" {
			return fmt.Errorf("attestation service refused (%s): %s: %s", resp.Status, e.Type, e.Detail)
		}
		return fmt.Errorf("attestation service %s: %s", path, resp.Status)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("attestation service %s: malformed answer: %w", path, err)
	}
	return nil
}
