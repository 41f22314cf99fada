package kbs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"cocoon.dev/cocoon/kbs"
)

// failingStore fails every call with an error whose text must never reach a
// remote caller (it names a path and a query, as a real store's would).
type failingStore struct{ kbs.Store }

var errStore = errors.New("bolt: open /var/lib/cocoon/kbs/db: SELECT secret FROM resources WHERE path='app/key/db': disk I/O error")

func (failingStore) Get(context.Context, string, int) ([]byte, int, error) { return nil, 0, errStore }
func (failingStore) Release(context.Context, string, int) ([]byte, int, error) {
	return nil, 0, errStore
}
func (failingStore) List(context.Context) ([]string, error) { return nil, errStore }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestInternalErrorsStayInside: a store failure answers the caller with a
// public message, the type "internal" and a request id; the cause is in
// the service's log under that id, never in the response; nothing is
// released.
func TestInternalErrorsStayInside(t *testing.T) {
	var logs syncBuf
	f := newFixture(t, true, func(c *kbs.Config) {
		c.Store = failingStore{c.Store}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx := context.Background()
	got, err := f.client(&simAttester{auth: authority(t)}).Resource(ctx, "app", "key", "db")
	if err == nil || got != nil {
		t.Fatalf("resource with a failing store: %q %v", got, err)
	}
	msg := err.Error()
	for _, leak := range []string{"bolt", "/var/lib", "SELECT", "disk I/O"} {
		if strings.Contains(msg, leak) {
			t.Errorf("the caller saw internal text %q: %s", leak, msg)
		}
	}
	if !strings.Contains(msg, "InternalError") || !strings.Contains(msg, "request id") {
		t.Errorf("the caller's error does not say it is internal with a request id: %s", msg)
	}
	if !strings.Contains(logs.String(), "disk I/O error") || !strings.Contains(logs.String(), "request_id=") {
		t.Errorf("the log lacks the cause and its request id:\n%s", logs.String())
	}
	if strings.Contains(f.auditLog(), `"verdict":"released"`) || strings.Contains(f.auditLog(), "SELECT") {
		t.Errorf("audit: %s", f.auditLog())
	}
	// The admin API too.
	if _, err := f.admin.List(ctx); err == nil || strings.Contains(err.Error(), "SELECT") {
		t.Errorf("admin list: %v", err)
	}
}
