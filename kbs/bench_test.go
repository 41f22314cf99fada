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
	p := newProtocol(&testing.T{}, f)
	_ = p
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
