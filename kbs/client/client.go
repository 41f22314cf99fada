// Package client is the KBS protocol client (RCAR: request, challenge,
// attestation, response) that runs inside the TEE: it makes an ephemeral key
// pair, binds its public key and the broker's nonce into fresh evidence, and
// decrypts the resource the broker encrypts to that key. It also has the
// admin calls the CLI uses.
package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/internal/httpjson"
	"cocoon.dev/cocoon/kbs/protocol"
	"cocoon.dev/cocoon/tee"
)

// HTTPClient returns an HTTP client that trusts only caPEM (nil: the
// system roots) over transport (nil: the default).
func HTTPClient(caPEM []byte, transport *http.Transport) (*http.Client, error) {
	if transport == nil {
		transport = http.DefaultTransport.(*http.Transport).Clone()
	} else {
		transport = transport.Clone()
	}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the key broker CA is not a PEM certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}, nil
}

// Client gets resources from a broker for the TEE it runs in.
type Client struct {
	URL      string
	HTTP     *http.Client
	Attester tee.Attester
}

func readErr(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e httpjson.Error
	if json.Unmarshal(b, &e) == nil && e.Type != "" {
		return &StatusError{Code: resp.StatusCode, msg: fmt.Sprintf("key broker: %s (%s): %s", resp.Status, e.Type, e.Detail)}
	}
	return &StatusError{Code: resp.StatusCode, msg: fmt.Sprintf("key broker: %s: %s", resp.Status, bytes.TrimSpace(b))}
}

// StatusError is the broker's answer to a request it refused.
type StatusError struct {
	Code int
	msg  string
}

func (e *StatusError) Error() string { return e.msg }

// IsNotFound says whether the broker answered 404: no such resource.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// Session is an attested KBS session: the broker's token, the ephemeral
// key pair the token attests (made here, inside the TEE) and the HTTP
// client holding the session cookie.
type Session struct {
	Token string
	Key   *ecdsa.PrivateKey
	base  string
	hc    *http.Client
}

// Attest runs the handshake (auth, attest) with a fresh key pair.
func (c *Client) Attest(ctx context.Context) (*Session, error) {
	if c.Attester == nil {
		return nil, errors.New("no TEE attester: resources are released only to attested TEEs")
	}
	jar, _ := cookiejar.New(nil)
	hc := *c.HTTP
	hc.Jar = jar
	base := strings.TrimRight(c.URL, "/")
	post := func(path string, body any, out any) error {
		b, _ := json.Marshal(body)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("key broker %s: %w", base, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return readErr(resp)
		}
		return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
	}
	var ch protocol.Challenge
	if err := post("/kbs/v0/auth", protocol.AuthRequest{Version: protocol.Version, TEE: string(c.Attester.Kind()), ExtraParams: ""}, &ch); err != nil {
		return nil, err
	}
	// The ephemeral key exists only in this process, inside the TEE.
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pubJSON, _ := jose.JSONWebKey{Key: &priv.PublicKey}.MarshalJSON()
	var pub map[string]any
	_ = json.Unmarshal(pubJSON, &pub)
	rd := protocol.RuntimeData{Nonce: ch.Nonce, TEEPubKey: pub}
	canon, err := tee.CanonicalJSON(map[string]any{"nonce": rd.Nonce, "tee-pubkey": rd.TEEPubKey})
	if err != nil {
		return nil, err
	}
	ev, err := c.Attester.Evidence(ctx, tee.BindKeyBroker.ReportData(canon))
	if err != nil {
		return nil, err
	}
	ev.Binding = tee.BindKeyBroker
	evJSON, _ := json.Marshal(ev)
	var tokResp map[string]string
	if err := post("/kbs/v0/attest", map[string]any{"runtime-data": rd, "tee-evidence": json.RawMessage(evJSON)}, &tokResp); err != nil {
		return nil, err
	}
	return &Session{Token: tokResp["token"], Key: priv, base: base, hc: &hc}, nil
}

// Resource fetches and decrypts repo/type/tag in an attested session.
func (s *Session) Resource(ctx context.Context, repo, typ, tag string) ([]byte, error) {
	if _, err := protocol.ResourcePath(repo, typ, tag); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/kbs/v0/resource/"+repo+"/"+typ+"/"+tag, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("key broker %s: %w", s.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readErr(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return Decrypt(body, s.Key)
}

// Resource runs the protocol and returns the plaintext of repo/type/tag.
func (c *Client) Resource(ctx context.Context, repo, typ, tag string) ([]byte, error) {
	if _, err := protocol.ResourcePath(repo, typ, tag); err != nil {
		return nil, err
	}
	s, err := c.Attest(ctx)
	if err != nil {
		return nil, err
	}
	return s.Resource(ctx, repo, typ, tag)
}

// Decrypt opens a JWE (flattened or compact) with the private key.
func Decrypt(jwe []byte, key any) ([]byte, error) {
	algs, encs := []jose.KeyAlgorithm{jose.ECDH_ES_A256KW, jose.RSA_OAEP_256}, []jose.ContentEncryption{jose.A256GCM}
	var obj *jose.JSONWebEncryption
	var err error
	if s := strings.TrimSpace(string(jwe)); strings.HasPrefix(s, "{") {
		obj, err = jose.ParseEncryptedJSON(s, algs, encs)
	} else {
		obj, err = jose.ParseEncryptedCompact(s, algs, encs)
	}
	if err != nil {
		return nil, fmt.Errorf("resource: not a JWE: %w", err)
	}
	pt, err := obj.Decrypt(key)
	if err != nil {
		return nil, fmt.Errorf("resource: decrypt: %w", err)
	}
	return pt, nil
}

// Admin calls the broker's admin API with JWTs signed by the admin key.
type Admin struct {
	URL  string
	HTTP *http.Client
	Key  ed25519.PrivateKey
}

func (a *Admin) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	return a.doHeader(ctx, method, path, body, nil)
}

// doHeader is do with further request headers.
func (a *Admin) doHeader(ctx context.Context, method, path string, body []byte, hdr http.Header) ([]byte, error) {
	tok, err := protocol.AdminToken(a.Key)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("key broker %s: %w", a.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readErr(resp)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}

// Put stores a resource.
func (a *Admin) Put(ctx context.Context, path string, data []byte) error {
	_, err := a.PutWith(ctx, path, data, PutOptions{})
	return err
}

// PutOneShot stores a resource's next version to be released once: to the
// first attested workload the release policy allows, on any replica.
func (a *Admin) PutOneShot(ctx context.Context, path string, data []byte) error {
	_, err := a.PutWith(ctx, path, data, PutOptions{OneShot: true})
	return err
}

// PutOptions are an admin put's attributes.
type PutOptions struct {
	// OneShot: release the version once (see PutOneShot).
	OneShot bool
	// RequestID, sent as the Idempotency-Key header, makes the put safe to
	// send again (on any replica) when its answer was lost: the broker
	// answers the version the first send stored instead of storing another
	// (a second one-shot version would be a second release). Use a fresh
	// one per value — a UUID, say; reused for another value the put is
	// refused (409 Conflict).
	RequestID string
}

// PutWith stores a resource's next version with opt and says which
// version holds it.
func (a *Admin) PutWith(ctx context.Context, path string, data []byte, opt PutOptions) (protocol.PutResponse, error) {
	var out protocol.PutResponse
	q := ""
	if opt.OneShot {
		q = "?one-shot=true"
	}
	var hdr http.Header
	if opt.RequestID != "" {
		hdr = http.Header{"Idempotency-Key": {strconv.Quote(opt.RequestID)}}
	}
	b, err := a.doHeader(ctx, http.MethodPost, "/kbs/v0/resource/"+path+q, data, hdr)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("key broker %s: the put's answer: %w", a.URL, err)
	}
	return out, nil
}

// AdminKeys lists the broker's admin keys.
func (a *Admin) AdminKeys(ctx context.Context) ([]protocol.AdminKey, error) {
	b, err := a.do(ctx, http.MethodGet, "/kbs/v0/admin/keys", nil)
	if err != nil {
		return nil, err
	}
	var out []protocol.AdminKey
	return out, json.Unmarshal(b, &out)
}

// AddAdminKey adds an admin key (PEM "PUBLIC KEY", Ed25519) under name.
func (a *Admin) AddAdminKey(ctx context.Context, name, pubPEM string) error {
	b, err := json.Marshal(protocol.AdminKey{Name: name, PublicKey: pubPEM})
	if err != nil {
		return err
	}
	_, err = a.do(ctx, http.MethodPost, "/kbs/v0/admin/keys", b)
	return err
}

// RemoveAdminKey removes the admin key name.
func (a *Admin) RemoveAdminKey(ctx context.Context, name string) error {
	_, err := a.do(ctx, http.MethodDelete, "/kbs/v0/admin/keys/"+url.PathEscape(name), nil)
	return err
}

// Get reads a resource (admin): the newest enabled version.
func (a *Admin) Get(ctx context.Context, path string) ([]byte, error) {
	return a.GetVersion(ctx, path, 0)
}

// GetVersion reads one version of a resource (0: the newest enabled one).
func (a *Admin) GetVersion(ctx context.Context, path string, version int) ([]byte, error) {
	q := ""
	if version > 0 {
		q = "?version=" + strconv.Itoa(version)
	}
	return a.do(ctx, http.MethodGet, "/kbs/v0/admin/resource/"+path+q, nil)
}

// Versions lists a resource's versions, oldest first.
func (a *Admin) Versions(ctx context.Context, path string) ([]protocol.ResourceVersion, error) {
	b, err := a.do(ctx, http.MethodGet, "/kbs/v0/admin/versions/"+path, nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Versions []protocol.ResourceVersion `json:"versions"`
	}
	return out.Versions, json.Unmarshal(b, &out)
}

// Reseal asks the broker to seal every stored value again under its master
// key (the last step of a master-key rotation) and returns its answer.
func (a *Admin) Reseal(ctx context.Context) (map[string]any, error) {
	b, err := a.do(ctx, http.MethodPost, "/kbs/v0/admin/reseal", nil)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(b, &out)
}

// Audit returns the newest n lines of the broker's shared audit log.
func (a *Admin) Audit(ctx context.Context, n int) ([]json.RawMessage, error) {
	b, err := a.do(ctx, http.MethodGet, "/kbs/v0/admin/audit?n="+strconv.Itoa(n), nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Lines []json.RawMessage `json:"lines"`
	}
	return out.Lines, json.Unmarshal(b, &out)
}

// SetDisabled disables (or enables again) one version of a resource.
func (a *Admin) SetDisabled(ctx context.Context, path string, version int, disabled bool) error {
	op := "enable"
	if disabled {
		op = "disable"
	}
	_, err := a.do(ctx, http.MethodPost, "/kbs/v0/admin/versions/"+path+"/"+strconv.Itoa(version)+"/"+op, nil)
	return err
}

// Delete removes a resource.
func (a *Admin) Delete(ctx context.Context, path string) error {
	_, err := a.do(ctx, http.MethodDelete, "/kbs/v0/resource/"+path, nil)
	return err
}

// List lists resources.
func (a *Admin) List(ctx context.Context) ([]string, error) {
	b, err := a.do(ctx, http.MethodGet, "/kbs/v0/admin/resources", nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Resources []string `json:"resources"`
	}
	return out.Resources, json.Unmarshal(b, &out)
}

// Policy reads the release policy.
func (a *Admin) Policy(ctx context.Context) (string, error) {
	b, err := a.do(ctx, http.MethodGet, "/kbs/v0/resource-policy", nil)
	return string(b), err
}

// SetPolicy sets the release policy.
func (a *Admin) SetPolicy(ctx context.Context, rego []byte) error {
	body, _ := json.Marshal(map[string]string{"policy": base64.RawURLEncoding.EncodeToString(rego)})
	_, err := a.do(ctx, http.MethodPost, "/kbs/v0/resource-policy", body)
	return err
}
