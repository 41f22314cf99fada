package kbs_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/kbs"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/kbs/protocol"
)

// replicas starts two brokers on one real PostgreSQL database, each with
// its own connections (as two processes would have), sharing the token
// keys and the attestation service as replicas share their state
// directory.
func replicas(t *testing.T) (a, b *fixture, url string) {
	t.Helper()
	pg := testpg.Start(t)
	url = pg.Database(t)
	master := bytes.Repeat([]byte{9}, 32)
	names := 0
	open := func(c *kbs.Config) {
		p, err := kbs.OpenPostgres(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		st, err := p.Store(master)
		if err != nil {
			t.Fatal(err)
		}
		pol, err := p.Policies(master)
		if err != nil {
			t.Fatal(err)
		}
		c.Store, c.Sessions, c.Policies = st, p.Sessions(0, nil), pol
		c.Audit, c.AuditLog = p.Audit(), p.Audit()
		// Each replica's fixture has its own admin key: both are in the
		// shared table, as two admins' keys would be.
		ak, err := p.AdminKeys(master)
		if err != nil {
			t.Fatal(err)
		}
		names++
		if err := ak.AddAdminKey(context.Background(), fmt.Sprintf("admin%d", names), c.AdminKey); err != nil {
			t.Fatal(err)
		}
		c.AdminKeys = ak
	}
	var shared kbs.Config
	a = newFixture(t, true, func(c *kbs.Config) { open(c); shared = *c })
	b = newFixture(t, true, func(c *kbs.Config) {
		open(c)
		c.Signer, c.Attestation = shared.Signer, shared.Attestation
	})
	return a, b, url
}

// TestReplicasShareTheProtocol: auth on one replica, attest on the other,
// the resource from the first; a put on one is read on the other; the
// database holds ciphertext only.
func TestReplicasShareTheProtocol(t *testing.T) {
	a, b, url := replicas(t)
	ctx := context.Background()
	const secret = "a secret both replicas serve"
	if err := a.admin.Put(ctx, "app/key/db", []byte(secret)); err != nil {
		t.Fatal(err)
	}
	p := newProtocol(t, a)
	n := p.auth()
	p.f = b
	code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false))
	if code != 200 {
		t.Fatalf("attest on B after auth on A: %d %v", code, m)
	}
	p.f = a
	resp, err := p.hc.Get(a.srv.URL + "/kbs/v0/resource/app/key/db")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("resource on A after attest on B: %d %s", resp.StatusCode, body)
	}
	if pt, err := client.Decrypt(body, p.priv); err != nil || string(pt) != secret {
		t.Fatalf("decrypt: %q %v", pt, err)
	}
	// What was put on A is read on B (each replica's admin API here has
	// its own key).
	if got, err := b.admin.Get(ctx, "app/key/db"); err != nil || string(got) != secret {
		t.Errorf("B's admin read of A's put: %q %v", got, err)
	}
	if err := b.admin.Delete(ctx, "app/key/db"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.admin.Get(ctx, "app/key/db"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("A after B's delete: %v", err)
	}
	if err := a.admin.Put(ctx, "app/key/db", []byte(secret)); err != nil {
		t.Fatal(err)
	}
	// The database itself holds ciphertext.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var sealed []byte
	if err := conn.QueryRow(ctx, `SELECT sealed FROM kbs_resources WHERE path = 'app/key/db'`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(secret)) || len(sealed) < len(secret)+16 {
		t.Error("the database holds the resource in plaintext")
	}
}

// TestNonceOnceAcrossReplicas: a nonce spent on one replica (by an
// attestation that failed) is refused on the other; the same session
// attested on both at once verifies its evidence once: every success
// carries the one token.
func TestNonceOnceAcrossReplicas(t *testing.T) {
	a, b, _ := replicas(t)
	p := newProtocol(t, a)
	n := p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), true)); code != 401 {
		t.Fatalf("tampered evidence on A: %d %v", code, m)
	}
	p.f = b
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false)); code != 401 || !strings.Contains(m["detail"].(string), "already used") {
		t.Fatalf("the nonce spent on A, on B: %d %v", code, m)
	}

	for i := 0; i < 8; i++ {
		p := newProtocol(t, a)
		n := p.auth()
		body := p.attestBody(n, p.pub(), p.pub(), false)
		var wg sync.WaitGroup
		var mu sync.Mutex
		tokens := map[string]int{}
		for _, f := range []*fixture{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				q := *p
				q.f = f
				code, m := q.post("/kbs/v0/attest", body)
				mu.Lock()
				defer mu.Unlock()
				if code == 200 {
					tokens[m["token"].(string)]++
				} else if code != 401 || !strings.Contains(m["detail"].(string), "already used") {
					t.Errorf("concurrent attest: %d %v", code, m)
				}
			}()
		}
		wg.Wait()
		if len(tokens) != 1 {
			t.Fatalf("round %d: %d distinct tokens for one session (want the evidence verified once)", i, len(tokens))
		}
	}
}

// TestSchemaMigrations: replicas opening at once migrate once; a database
// migrated by a newer cocoon is refused with what to do.
func TestSchemaMigrations(t *testing.T) {
	url := testpg.Start(t).Database(t)
	ctx := context.Background()
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() {
			p, err := kbs.OpenPostgres(ctx, url)
			if err == nil {
				p.Close()
			}
			errs <- err
		}()
	}
	for i := 0; i < 4; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var versions int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM cocoon_kbs_schema`).Scan(&versions); err != nil || versions != kbs.SchemaVersions() {
		t.Fatalf("schema versions recorded: %d %v", versions, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO cocoon_kbs_schema (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if _, err := kbs.OpenPostgres(ctx, url); err == nil || !strings.Contains(err.Error(), "upgrade cocoon") {
		t.Fatalf("a newer schema: %v", err)
	}
	if _, err := kbs.OpenPostgres(ctx, "mysql://root:hunter2@x"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a bad URL: %v", err)
	}
}

// TestPolicyAcrossReplicas: a release policy set on one replica governs the
// other at once (NOTIFY), so a tightened policy is not escaped by asking
// elsewhere; a replica started later reads it from the store.
func TestPolicyAcrossReplicas(t *testing.T) {
	a, b, url := replicas(t)
	ctx := context.Background()
	if err := a.admin.Put(ctx, "app/key/db", []byte("s3cret")); err != nil {
		t.Fatal(err)
	}
	fetch := func(f *fixture) (int, string) { return attestAndFetch(t, f, "app/key/db") }
	if code, body := fetch(b); code != 200 {
		t.Fatalf("B before: %d %s", code, body)
	}
	deny := "package policy\nimport rego.v1\ndefault allow := false\nreasons contains \"closed for maintenance\"\n"
	if err := a.admin.SetPolicy(ctx, []byte(deny)); err != nil {
		t.Fatal(err)
	}
	// B is told by NOTIFY; it looks again within 5 s anyway.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := b.admin.Policy(ctx)
		if err == nil && got == deny {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's policy after A's set: %q %v", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("B had the new policy %v after A's set", time.Since(deadline.Add(-10*time.Second)))
	if code, body := fetch(b); code != 401 || !strings.Contains(body, "PolicyDeny") || !strings.Contains(body, "closed for maintenance") {
		t.Fatalf("B after A tightened the policy: %d %s", code, body)
	}

	// Whoever controls the database cannot loosen the policy: a version
	// written without the master key's MAC is refused by the replicas (B
	// keeps enforcing the last good one) and by a replica starting up.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE kbs_policy SET text = $1, version = version + 1`, "package policy\nallow := true\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_notify('cocoon_kbs_policy', '')`); err != nil {
		t.Fatal(err)
	}
	if code, body := fetch(b); code != 401 || !strings.Contains(body, "closed for maintenance") {
		t.Fatalf("B after the database was altered: %d %s", code, body)
	}
	p, err := kbs.OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pol, _ := p.Policies(bytes.Repeat([]byte{9}, 32))
	if text, _, err := pol.ReleasePolicy(ctx); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Fatalf("an altered stored policy read back: %q %v", text, err)
	}
}

// TestSharedAuditLog: what either replica decides is in the one log the
// admin API of either serves, in commit order, without the secret.
func TestSharedAuditLog(t *testing.T) {
	a, b, _ := replicas(t)
	ctx := context.Background()
	if err := a.admin.Put(ctx, "app/key/db", []byte("audit-secret")); err != nil {
		t.Fatal(err)
	}
	if code, body := attestAndFetch(t, b, "app/key/db"); code != 200 {
		t.Fatalf("release on B: %d %s", code, body)
	}
	for _, f := range []*fixture{a, b} {
		// Each replica's lines reach the shared log within milliseconds.
		all := ""
		auditUntil(t, f, func(lines []json.RawMessage) bool {
			all = ""
			for _, l := range lines {
				all += string(l) + "\n"
			}
			return strings.Contains(all, `"verdict":"released"`)
		})
		put, rel := strings.Index(all, `"admin_put"`), strings.Index(all, `"verdict":"released"`)
		if put < 0 || rel < 0 || put > rel || strings.Contains(all, "audit-secret") {
			t.Fatalf("the shared audit log:\n%s", all)
		}
	}
}

// auditUntil reads the shared audit log through f until done says it holds
// what the test waits for (the other replica's lines arrive within
// milliseconds), and fails after 10 s.
func auditUntil(t *testing.T, f *fixture, done func([]json.RawMessage) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines, err := f.admin.Audit(context.Background(), 500)
		if err != nil {
			t.Fatal(err)
		}
		if done(lines) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shared audit log never held what was awaited:\n%s", lines)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// attestAndFetch runs the protocol with a fresh session on f and asks for
// the resource at path; it returns the status and the body (a JWE when 200).
func attestAndFetch(t *testing.T, f *fixture, path string) (int, string) {
	t.Helper()
	p := newProtocol(t, f)
	n := p.auth()
	if code, m := p.post("/kbs/v0/attest", p.attestBody(n, p.pub(), p.pub(), false)); code != 200 {
		t.Fatalf("attest: %d %v", code, m)
	}
	resp, err := p.hc.Get(f.srv.URL + "/kbs/v0/resource/" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestOneShotAcrossReplicas: eight attested workloads ask both replicas at
// once for a one-shot version: one gets it, the others a PolicyDeny that
// says it was released; the shared audit log has one release.
func TestOneShotAcrossReplicas(t *testing.T) {
	a, b, _ := replicas(t)
	ctx := context.Background()
	if err := a.admin.PutOneShot(ctx, "app/key/boot", []byte("bootstrap-token")); err != nil {
		t.Fatal(err)
	}
	var ps []*rawClient
	for i := 0; i < 8; i++ {
		f := []*fixture{a, b}[i%2]
		p := newProtocol(t, f)
		if code, m := p.post("/kbs/v0/attest", p.attestBody(p.auth(), p.pub(), p.pub(), false)); code != 200 {
			t.Fatalf("attest: %d %v", code, m)
		}
		ps = append(ps, p)
	}
	type answer struct {
		code int
		body []byte
		p    *rawClient
	}
	answers := make(chan answer, len(ps))
	for _, p := range ps {
		go func() {
			resp, err := p.hc.Get(p.f.srv.URL + "/kbs/v0/resource/app/key/boot")
			if err != nil {
				answers <- answer{code: -1, body: []byte(err.Error())}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, body, p}
		}()
	}
	released := 0
	for range ps {
		x := <-answers
		switch {
		case x.code == 200:
			released++
			if pt, err := client.Decrypt(x.body, x.p.priv); err != nil || string(pt) != "bootstrap-token" {
				t.Errorf("decrypt: %q %v", pt, err)
			}
		case x.code == 401 && strings.Contains(string(x.body), "PolicyDeny") && strings.Contains(string(x.body), "released already"):
		default:
			t.Errorf("answer %d %s", x.code, x.body)
		}
	}
	if released != 1 {
		t.Fatalf("the one-shot version was released %d times", released)
	}
	n := 0
	auditUntil(t, a, func(lines []json.RawMessage) bool {
		n = 0
		asked := 0
		for _, l := range lines {
			var e struct{ Event, Verdict, Resource string }
			if err := json.Unmarshal(l, &e); err != nil {
				t.Fatal(err)
			}
			if e.Event == "resource" && e.Resource == "app/key/boot" {
				asked++
				if e.Verdict == "released" {
					n++
				}
			}
		}
		return asked == len(ps)
	})
	if n != 1 {
		t.Errorf("the shared audit log has %d releases of the one-shot version", n)
	}
	vs, err := b.admin.Versions(ctx, "app/key/boot")
	if err != nil || len(vs) != 1 || !vs[0].OneShot || !vs[0].Released {
		t.Errorf("versions: %+v %v", vs, err)
	}
}

// TestAdminKeysAcrossReplicas: an admin key added through one replica
// works on the other at once, and one removed stops working on both; the
// last key is not removed; a key written into the database without the
// master key's MAC (by whoever controls it) is not an admin.
func TestAdminKeysAcrossReplicas(t *testing.T) {
	a, b, url := replicas(t)
	ctx := context.Background()
	keys, err := b.admin.AdminKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %+v %v", keys, err)
	}
	dir := t.TempDir()
	alicePath := filepath.Join(dir, "alice.key")
	if err := kbs.GenerateAdminKey(alicePath); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(alicePath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("alice.key: %v %v", fi.Mode(), err)
	}
	alicePub, _ := os.ReadFile(alicePath + ".pub")
	aliceKey, err := kbs.LoadAdminKey(alicePath)
	if err != nil {
		t.Fatal(err)
	}
	alice := func(f *fixture) *client.Admin {
		return &client.Admin{URL: f.srv.URL, HTTP: f.srv.Client(), Key: aliceKey}
	}
	if err := alice(b).Put(ctx, "app/key/x", []byte("x")); err == nil || !strings.Contains(err.Error(), "AdminAuthAccess") {
		t.Fatalf("alice before she was added: %v", err)
	}
	if err := a.admin.AddAdminKey(ctx, "alice", string(alicePub)); err != nil {
		t.Fatal(err)
	}
	if err := a.admin.AddAdminKey(ctx, "alice", string(alicePub)); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("alice twice: %v", err)
	}
	if err := a.admin.AddAdminKey(ctx, "../bob", string(alicePub)); err == nil || !strings.Contains(err.Error(), "admin key name") {
		t.Errorf("a bad name: %v", err)
	}
	if err := alice(b).Put(ctx, "app/key/x", []byte("x")); err != nil {
		t.Fatalf("alice on B after A added her: %v", err)
	}
	if err := b.admin.RemoveAdminKey(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice(a).List(ctx); err == nil || !strings.Contains(err.Error(), "AdminAuthAccess") {
		t.Fatalf("alice on A after B removed her: %v", err)
	}
	// Whoever controls the database adds a key of its own.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	pub := aliceKey.Public().(ed25519.PublicKey)
	if _, err := conn.Exec(ctx, `INSERT INTO kbs_admin_keys (name, pub, mac) VALUES ('mallory', $1, $2)`, []byte(pub), bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice(a).List(ctx); err == nil || !strings.Contains(err.Error(), "AdminAuthAccess") {
		t.Fatalf("a key inserted into the database is an admin: %v", err)
	}
	if keys, err := a.admin.AdminKeys(ctx); err != nil || len(keys) != 2 {
		t.Errorf("keys with an unauthenticated row: %+v %v", keys, err)
	}
	conn.Exec(ctx, `DELETE FROM kbs_admin_keys WHERE name = 'mallory'`)
	// The last key stays.
	if err := a.admin.RemoveAdminKey(ctx, "admin2"); err != nil {
		t.Fatal(err)
	}
	if err := a.admin.RemoveAdminKey(ctx, "admin1"); err == nil || !strings.Contains(err.Error(), "last admin key") {
		t.Fatalf("removing the last key: %v", err)
	}
	if _, err := a.admin.List(ctx); err != nil {
		t.Fatalf("the last key after the refused removal: %v", err)
	}
}

// TestIdempotentPutAcrossReplicas: an admin whose put's answer was lost
// sends it again, with its Idempotency-Key, to the other replica: no
// second version is stored (for a one-shot value a second version would
// be a second release). The key reused for another value is refused with
// 409, and a malformed key with nothing stored.
func TestIdempotentPutAcrossReplicas(t *testing.T) {
	a, b, _ := replicas(t)
	ctx := context.Background()
	opt := client.PutOptions{OneShot: true, RequestID: "3f1c9a52-boot"}
	first, err := a.admin.PutWith(ctx, "app/key/boot", []byte("bootstrap-token"), opt)
	if err != nil || first.Version != 1 || first.Replayed {
		t.Fatalf("first put: %+v %v", first, err)
	}
	again, err := b.admin.PutWith(ctx, "app/key/boot", []byte("bootstrap-token"), opt)
	if err != nil || again.Version != 1 || !again.Replayed || !again.OneShot {
		t.Fatalf("sent again to the other replica: %+v %v", again, err)
	}
	_, err = b.admin.PutWith(ctx, "app/key/boot", []byte("another-token"), opt)
	if err == nil || !strings.Contains(err.Error(), "Conflict") || !strings.Contains(err.Error(), "nothing was stored") {
		t.Errorf("the key reused for another value: %v", err)
	}
	for _, key := range []string{"two words", strings.Repeat("k", 129), `""`} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+"/kbs/v0/resource/app/key/boot", strings.NewReader("x"))
		tok, err := protocol.AdminToken(a.adminKey)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Idempotency-Key", key)
		resp, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "Idempotency-Key") {
			t.Errorf("Idempotency-Key %q: %d %s", key, resp.StatusCode, body)
		}
	}
	vs, err := a.admin.Versions(ctx, "app/key/boot")
	if err != nil || len(vs) != 1 || !vs[0].OneShot {
		t.Fatalf("versions: %+v %v", vs, err)
	}
	if got, err := a.admin.Get(ctx, "app/key/boot"); err != nil || string(got) != "bootstrap-token" {
		t.Errorf("the stored value: %q %v", got, err)
	}
	auditUntil(t, a, func(lines []json.RawMessage) bool {
		verdicts := map[string]int{}
		for _, l := range lines {
			var e struct{ Event, Verdict string }
			if err := json.Unmarshal(l, &e); err != nil {
				t.Fatal(err)
			}
			if e.Event == "admin_put" {
				verdicts[e.Verdict]++
			}
		}
		return verdicts["stored"] == 1 && verdicts["replayed"] == 1 && verdicts["refused"] == 1
	})
}
