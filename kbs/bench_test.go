package kbs_test

import (
	"context"
	"io"
	"net/http"
	"testing"
)

// BenchmarkResourceWithToken is a resource fetch with an existing token.
func BenchmarkResourceWithToken(b *testing.B) {
	f := newFixture(b, true, nil)
	ctx := context.Background()
	f.admin.Put(ctx, "app/key/db", []byte("a 32-byte secret for the bench.."))
	c := f.client(&simAttester{auth: authority(b)})
	if _, err := c.Resource(ctx, "app", "key", "db"); err != nil {
		b.Fatal(err)
	}
	// The session cookie path: one attested session, many fetches.
	tok := attestToken(b, f)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/kbs/v0/resource/app/key/db", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(err, resp.Status)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkAttestAndResource is the full protocol with sim evidence made
// before the timer.
func BenchmarkAttestAndResource(b *testing.B) {
	f := newFixture(b, true, nil)
	ctx := context.Background()
	f.admin.Put(ctx, "app/key/db", []byte("a 32-byte secret for the bench.."))
	t := &testing.T{}
	type prepared struct {
		p    *rawClient
		body map[string]any
	}
	ps := make([]prepared, b.N)
	for i := range ps {
		p := newProtocol(t, f)
		n := p.auth()
		ps[i] = prepared{p, p.attestBody(n, p.pub(), p.pub(), false)}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := ps[i].p
		if code, m := p.post("/kbs/v0/attest", ps[i].body); code != 200 {
			b.Fatal(code, m)
		}
		resp, err := p.hc.Get(f.srv.URL + "/kbs/v0/resource/app/key/db")
		if err != nil || resp.StatusCode != 200 {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
