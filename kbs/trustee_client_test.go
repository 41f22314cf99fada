package kbs_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"cocoon.dev/cocoon/kbs"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

// A KBS client written from the protocol text alone (Trustee's
// kbs/docs/kbs_attestation_protocol.md, RFC 7516/7518 for the JWE), not
// from cocoon's client package: the way guest-components' kbs_protocol
// speaks — version 0.4.0, tee "sample", extra-params listing its hashes,
// composite tee-evidence, REPORT_DATA = SHA-384 of the canonical
// {additional-evidence, nonce, tee-pubkey}, zero-padded; it decrypts the
// resource by rebuilding the AEAD data from the header it parsed, as
// guest-components does.
type trusteeClient struct {
	t    *testing.T
	base string
	hc   *http.Client
	key  *ecdh.PrivateKey
	// launch is what the (simulated) TEE was launched with.
	launch sim.Launch
	// aaForm sends the attestation agent's SNP evidence, not cocoon's
	// envelope.
	aaForm bool
	// teeName and primary, when set, are the KBS TEE name and the primary
	// evidence made for the binding hash (unpadded), as that TEE's
	// attester in guest-components makes it.
	teeName string
	primary func(hash []byte) any
}

func newTrusteeClient(t *testing.T, f *fixture) *trusteeClient {
	jar, _ := cookiejar.New(nil)
	hc := *f.srv.Client()
	hc.Jar = jar
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &trusteeClient{t: t, base: f.srv.URL, hc: &hc, key: k}
}

func (c *trusteeClient) do(method, path string, body []byte) (int, []byte) {
	req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (c *trusteeClient) teePubKey() map[string]any {
	raw := c.key.PublicKey().Bytes() // 0x04 || X || Y
	return map[string]any{"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
		"x": base64.RawURLEncoding.EncodeToString(raw[1:33]), "y": base64.RawURLEncoding.EncodeToString(raw[33:])}
}

// canonical is JCS for the runtime data's values (strings and objects).
func canonical(t *testing.T, v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// attestBody answers a challenge. reportData, when set, replaces the
// REPORT_DATA the protocol asks for (to play a wrong binding).
func (c *trusteeClient) attestBody(nonce string, reportData *[64]byte) []byte {
	pub := c.teePubKey()
	rd := canonical(c.t, map[string]any{"additional-evidence": "", "nonce": nonce, "tee-pubkey": pub})
	var report [64]byte
	h := sha512.Sum384(rd)
	copy(report[:], h[:])
	if reportData != nil {
		report = *reportData
	}
	raw, err := authority(c.t).Report(c.launch, report)
	if err != nil {
		c.t.Fatal(err)
	}
	var primary any = map[string]any{"tee": "sim", "report": raw, "certs": map[string][]byte{"vcek": authority(c.t).Vcek.Raw}}
	if c.primary != nil {
		primary = c.primary(h[:])
	}
	if c.aaForm {
		aa, err := tee.SNPToAA(raw, map[string][]byte{"vcek": authority(c.t).Vcek.Raw})
		if err != nil {
			c.t.Fatal(err)
		}
		primary = json.RawMessage(aa)
	}
	b, _ := json.Marshal(map[string]any{
		"runtime-data": map[string]any{"nonce": nonce, "tee-pubkey": pub},
		"tee-evidence": map[string]any{"primary_evidence": primary, "additional_evidence": ""},
	})
	return b
}

func (c *trusteeClient) auth() (int, map[string]any) {
	name := c.teeName
	if name == "" {
		name = "sample"
	}
	code, b := c.do(http.MethodPost, "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"`+name+`","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}`))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return code, m
}

// decrypt opens the flattened JWE as guest-components does.
func (c *trusteeClient) decrypt(body []byte) ([]byte, error) {
	var r struct {
		Protected, EncryptedKey, IV, Ciphertext, Tag string
	}
	if err := json.Unmarshal(body, &struct {
		P *string `json:"protected"`
		E *string `json:"encrypted_key"`
		I *string `json:"iv"`
		C *string `json:"ciphertext"`
		T *string `json:"tag"`
	}{&r.Protected, &r.EncryptedKey, &r.IV, &r.Ciphertext, &r.Tag}); err != nil {
		return nil, err
	}
	d := base64.RawURLEncoding.DecodeString
	hb, err := d(r.Protected)
	if err != nil {
		return nil, err
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return nil, err
	}
	// The AEAD data is the base64url of the header re-serialised with
	// sorted keys (serde_json's map), not the bytes received.
	resorted, _ := json.Marshal(hdr)
	aad := base64.RawURLEncoding.EncodeToString(resorted)
	if hdr["alg"] != "ECDH-ES+A256KW" || hdr["enc"] != "A256GCM" {
		return nil, errors.New("unexpected algorithms")
	}
	epk, _ := hdr["epk"].(map[string]any)
	x, _ := d(epk["x"].(string))
	y, _ := d(epk["y"].(string))
	peer, err := ecdh.P256().NewPublicKey(append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, err
	}
	z, err := c.key.ECDH(peer)
	if err != nil {
		return nil, err
	}
	// RFC 7518 §4.6.2: Concat KDF, SHA-256, one round for 256 bits.
	alg := []byte("ECDH-ES+A256KW")
	h := sha256.New()
	for _, part := range [][]byte{{0, 0, 0, 1}, z, lp(alg), lp(nil), lp(nil), {0, 0, 1, 0}} {
		h.Write(part)
	}
	kek := h.Sum(nil)
	wrapped, _ := d(r.EncryptedKey)
	cek, err := aesUnwrap(kek, wrapped)
	if err != nil {
		return nil, err
	}
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)
	iv, _ := d(r.IV)
	ct, _ := d(r.Ciphertext)
	tag, _ := d(r.Tag)
	return gcm.Open(nil, iv, append(ct, tag...), []byte(aad))
}

func lp(b []byte) []byte {
	out := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	return append(out, b...)
}

// aesUnwrap is RFC 3394 key unwrap.
func aesUnwrap(kek, in []byte) ([]byte, error) {
	if len(in)%8 != 0 || len(in) < 24 {
		return nil, errors.New("bad wrapped key")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(in)/8 - 1
	a := append([]byte(nil), in[:8]...)
	r := make([][]byte, n)
	for i := range r {
		r[i] = append([]byte(nil), in[8*(i+1):8*(i+2)]...)
	}
	buf := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			tv := uint64(n*j + i)
			var tb [8]byte
			binary.BigEndian.PutUint64(tb[:], tv)
			for k := range a {
				a[k] ^= tb[k]
			}
			copy(buf, a)
			copy(buf[8:], r[i-1])
			block.Decrypt(buf, buf)
			copy(a, buf[:8])
			copy(r[i-1], buf[8:])
		}
	}
	if !bytes.Equal(a, bytes.Repeat([]byte{0xa6}, 8)) {
		return nil, errors.New("key unwrap integrity check failed")
	}
	return bytes.Join(r, nil), nil
}

func TestTrusteeClientAttestsAndDecrypts(t *testing.T) {
	f := newFixture(t, true, nil)
	ctx := context.Background()
	if err := f.admin.Put(ctx, "default/key/one", []byte("s3cret-one")); err != nil {
		t.Fatal(err)
	}
	c := newTrusteeClient(t, f)
	code, ch := c.auth()
	if code != 200 {
		t.Fatalf("auth: %d %v", code, ch)
	}
	// A client that can do SHA-384 gets Trustee's challenge: extra-params "".
	if ch["extra-params"] != "" || ch["nonce"] == "" {
		t.Fatalf("challenge %v", ch)
	}
	code, b := c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(ch["nonce"].(string), nil))
	if code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal(b, &tok); err != nil || strings.Count(tok.Token, ".") != 2 {
		t.Fatalf("attest answer %s", b)
	}
	// The token says which binding attested, for release policies.
	pb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.Token, ".")[1])
	if !strings.Contains(string(pb), `"binding":"plain/sha384"`) {
		t.Errorf("the token does not name the binding: %s", pb)
	}
	// The token's header carries its key (jwk), which the broker's JWKS lists.
	hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.Token, ".")[0])
	var hdr struct {
		Kid string         `json:"kid"`
		JWK map[string]any `json:"jwk"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr.JWK["kty"] != "EC" || hdr.JWK["d"] != nil {
		t.Errorf("token header %s", hb)
	}
	_, jwks := c.do(http.MethodGet, "/.well-known/jwks.json", nil)
	if !strings.Contains(string(jwks), hdr.Kid) || !strings.Contains(string(jwks), hdr.JWK["x"].(string)) {
		t.Errorf("the JWKS %s does not list the token's key %v", jwks, hdr.JWK)
	}
	code, b = c.do(http.MethodGet, "/kbs/v0/resource/default/key/one", nil)
	if code != 200 {
		t.Fatalf("resource: %d %s", code, b)
	}
	got, err := c.decrypt(b)
	if err != nil || string(got) != "s3cret-one" {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	// The token works as a bearer token from another connection.
	bearer := newTrusteeClient(t, f)
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/kbs/v0/resource/default/key/one", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := bearer.hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bearer: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestTrusteeNegatives: every refusal is Trustee's status and an RFC 7807
// body whose type is the protocol's URI; nothing is released.
func TestTrusteeNegatives(t *testing.T) {
	f := newFixture(t, true, nil)
	f.admin.Put(context.Background(), "default/key/one", []byte("s3cret-one"))
	type problem struct {
		Type, Detail string
	}
	check := func(name string, code int, body []byte, wantCode int, wantType string) {
		t.Helper()
		var p problem
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("%s: not JSON: %s", name, body)
			return
		}
		if code != wantCode || p.Type != kbs.ErrorTypePrefix+wantType || p.Detail == "" {
			t.Errorf("%s: %d %+v, want %d %s", name, code, p, wantCode, wantType)
		}
		if bytes.Contains(body, []byte("s3cret")) {
			t.Errorf("%s: the answer carries the secret", name)
		}
	}
	c := newTrusteeClient(t, f)
	for _, v := range []string{"0.3.0", "0.4.1", "0.4.0-rc1", "1.0.0", ""} {
		code, b := c.do(http.MethodPost, "/kbs/v0/auth", []byte(`{"version":"`+v+`","tee":"sample","extra-params":""}`))
		check("version "+v, code, b, 401, "AttestationError")
	}
	code, b := c.do(http.MethodPost, "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"cca","extra-params":""}`))
	check("unverifiable tee", code, b, 401, "AttestationError")
	// Evidence bound with cocoon's key-broker label in a composite body:
	// the composite binding is the protocol's, nothing else.
	_, ch := c.auth()
	n := ch["nonce"].(string)
	wrong := tee.BindKeyBroker.ReportData(canonical(t, map[string]any{"nonce": n, "tee-pubkey": c.teePubKey()}))
	code, b = c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(n, &wrong))
	check("wrong binding", code, b, 401, "AttestationError")
	// SHA-512 over the same runtime data is not the SHA-384 the challenge chose.
	_, ch = c.auth()
	n = ch["nonce"].(string)
	s512 := sha512.Sum512(canonical(t, map[string]any{"additional-evidence": "", "nonce": n, "tee-pubkey": c.teePubKey()}))
	code, b = c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(n, &s512))
	check("other hash", code, b, 401, "AttestationError")
	// Additional evidence the broker cannot verify is refused, not ignored.
	_, ch = c.auth()
	body := bytes.Replace(c.attestBody(ch["nonce"].(string), nil), []byte(`"additional_evidence":""`), []byte(`"additional_evidence":"{\"nvidia\":{}}"`), 1)
	code, b = c.do(http.MethodPost, "/kbs/v0/attest", body)
	check("additional evidence", code, b, 401, "AttestationError")
	// Not attested: no token.
	code, b = c.do(http.MethodGet, "/kbs/v0/resource/default/key/one", nil)
	check("no token", code, b, 401, "TokenNotFound")
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/kbs/v0/resource/default/key/one", nil)
	req.Header.Set("Authorization", "Bearer e30.e30.AAAA")
	resp, _ := http.DefaultClient.Do(req)
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check("forged token", resp.StatusCode, rb, 401, "TokenVerifierError")
	// Routes that name nothing.
	code, b = c.do(http.MethodGet, "/kbs/v0/nothing/a/b", nil)
	check("unknown plugin", code, b, 404, "PluginNotFound")
	code, b = c.do(http.MethodGet, "/kbs/v0/resource/default/key/..", nil)
	if code != 404 {
		t.Errorf("bad path: %d %s", code, b)
	}
	code, b = c.do(http.MethodPost, "/kbs/v0/attest", []byte(`{"runtime-data":{"nonce":"`+strings.Repeat("a", 2<<20)+`"}}`))
	check("oversize", code, b, 413, "PayloadTooLarge")
	// The attested client is refused a resource the policy denies, and one
	// that does not exist.
	a := newTrusteeClient(t, f)
	_, ch = a.auth()
	if code, b := a.do(http.MethodPost, "/kbs/v0/attest", a.attestBody(ch["nonce"].(string), nil)); code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	code, b = a.do(http.MethodGet, "/kbs/v0/resource/default/key/none", nil)
	check("missing resource", code, b, 404, "ResourceNotFound")
	deny := "package policy\ndefault allow := false\n"
	if err := f.admin.SetPolicy(context.Background(), []byte(deny)); err != nil {
		t.Fatal(err)
	}
	code, b = a.do(http.MethodGet, "/kbs/v0/resource/default/key/one", nil)
	check("denied", code, b, 401, "PolicyDeny")
}

// TestTrusteeHashSelection: a client that cannot do SHA-384 is told which
// hash to bind with, and its evidence is checked under that one.
func TestTrusteeHashSelection(t *testing.T) {
	f := newFixture(t, true, nil)
	c := newTrusteeClient(t, f)
	code, b := c.do(http.MethodPost, "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"sample","extra-params":{"supported-hash-algorithms":["sha512"]}}`))
	var ch map[string]any
	_ = json.Unmarshal(b, &ch)
	if code != 200 || ch["extra-params"].(map[string]any)["selected-hash-algorithm"] != "sha512" {
		t.Fatalf("challenge: %d %s", code, b)
	}
	n := ch["nonce"].(string)
	s512 := sha512.Sum512(canonical(t, map[string]any{"additional-evidence": "", "nonce": n, "tee-pubkey": c.teePubKey()}))
	if code, b := c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(n, &s512)); code != 200 {
		t.Fatalf("sha512 attest: %d %s", code, b)
	}
	code, b = c.do(http.MethodPost, "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"sample","extra-params":{"supported-hash-algorithms":["md5"]}}`))
	if code != 401 || !strings.Contains(string(b), "md5") {
		t.Errorf("no common hash: %d %s", code, b)
	}
}

// TestTrusteeAASNPEvidence: the attestation agent's SNP evidence (what the
// in-pod /aa/evidence answers) attests in a "sample" session, verified
// against the simulated chip's roots; the same evidence in an "snp" session
// is checked against AMD's roots and refused.
func TestTrusteeAASNPEvidence(t *testing.T) {
	f := newFixture(t, true, nil)
	f.admin.Put(context.Background(), "default/key/one", []byte("s3cret-one"))
	c := newTrusteeClient(t, f)
	c.aaForm = true
	_, ch := c.auth()
	if code, b := c.do(http.MethodPost, "/kbs/v0/attest", c.attestBody(ch["nonce"].(string), nil)); code != 200 {
		t.Fatalf("attest: %d %s", code, b)
	}
	code, b := c.do(http.MethodGet, "/kbs/v0/resource/default/key/one", nil)
	if got, err := c.decrypt(b); code != 200 || err != nil || string(got) != "s3cret-one" {
		t.Fatalf("resource: %d %q %v", code, got, err)
	}
	s := newTrusteeClient(t, f)
	s.aaForm = true
	code, b = s.do(http.MethodPost, "/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"snp","extra-params":""}`))
	var ch2 map[string]any
	json.Unmarshal(b, &ch2)
	if code != 200 {
		t.Fatalf("auth snp: %d %s", code, b)
	}
	if code, b := s.do(http.MethodPost, "/kbs/v0/attest", s.attestBody(ch2["nonce"].(string), nil)); code != 401 {
		t.Errorf("sim evidence in an snp session: %d %s", code, b)
	}
}
