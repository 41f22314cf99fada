package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cocoon.dev/cocoon/guest"
)

// TestAgentDigestCache: a digest is cached only for a file changed over a
// second ago, used only for the file it was computed for, and a corrupt
// cache is recomputed.
func TestAgentDigestCache(t *testing.T) {
	root := Root(t.TempDir())
	cache := filepath.Join(string(root), fileAgentDigest)
	bin := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(bin, []byte("agent one"), 0o755); err != nil {
		t.Fatal(err)
	}
	digest := func(now time.Time) string {
		t.Helper()
		got, err := root.agentDigest(bin, now)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := func() string {
		d, err := guest.FileDigest(bin)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Just written: computed, not cached (a change within the same clock
	// tick would keep its change time).
	if got := digest(time.Now()); got != want() {
		t.Fatalf("fresh file: %s", got)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("a racily clean file was cached: %v", err)
	}
	later := time.Now().Add(2 * time.Second)
	if got := digest(later); got != want() {
		t.Fatalf("old file: %s", got)
	}
	// The cache is what answers now: plant a marker in it.
	var e digestEntry
	b, err := os.ReadFile(cache)
	if err != nil || json.Unmarshal(b, &e) != nil {
		t.Fatalf("no cache entry: %v", err)
	}
	e.Digest = "sha256:marker"
	if err := writeCache(cache, e); err != nil {
		t.Fatal(err)
	}
	if got := digest(later); got != "sha256:marker" {
		t.Fatalf("the cache was not used: %s", got)
	}
	// Another file in its place (another inode): recomputed.
	other := bin + ".new"
	if err := os.WriteFile(other, []byte("agent two"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, bin); err != nil {
		t.Fatal(err)
	}
	if got := digest(later); got != want() || got == "sha256:marker" {
		t.Fatalf("replaced file: %s", got)
	}
	// Rewritten in place with another size: recomputed.
	if err := os.WriteFile(bin, []byte("agent three, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := digest(later); got != want() {
		t.Fatalf("rewritten file: %s", got)
	}
	// A corrupt cache is recomputed, not trusted.
	if err := os.WriteFile(cache, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := digest(later); got != want() {
		t.Fatalf("corrupt cache: %s", got)
	}
}
