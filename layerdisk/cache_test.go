package layerdisk

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCachePrune: sandboxes hold disks by their links; pruning removes
// only disks no sandbox holds and none used since the cutoff, a held
// disk's data outlives the cache's copy, and a pruned disk is built again
// for the next sandbox.
func TestCachePrune(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := Cache{Dir: t.TempDir(), Now: func() time.Time { return now }}
	layer := testLayer(t)
	a, b := "sha256:"+strings.Repeat("aa", 32), "sha256:"+strings.Repeat("bb", 32)
	builds := 0
	open := func() (io.ReadCloser, error) { builds++; return io.NopCloser(bytes.NewReader(layer)), nil }
	sb1, sb2 := t.TempDir(), t.TempDir()
	link := func(sb, diffID string) string {
		return filepath.Join(sb, strings.TrimPrefix(diffID, "sha256:")+".disk")
	}
	for _, u := range []struct{ sb, diffID string }{{sb1, a}, {sb2, a}, {sb1, b}} {
		if _, err := c.Use(u.diffID, open, link(u.sb, u.diffID)); err != nil {
			t.Fatal(err)
		}
	}
	if builds != 2 {
		t.Fatalf("%d builds for 2 layers", builds)
	}
	users := func() map[string]int {
		t.Helper()
		list, err := c.List()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, e := range list {
			if e.Bytes == 0 || !e.LastUsed.Equal(now) {
				t.Errorf("entry %+v: want a size and last use %v", e, now)
			}
			m[e.DiffID] = e.Users
		}
		return m
	}
	if got := users(); got[a] != 2 || got[b] != 1 || len(got) != 2 {
		t.Fatalf("users: %v", got)
	}
	// Held disks are kept however old.
	res, err := c.Prune(now.Add(time.Hour))
	if err != nil || len(res.Removed) != 0 || res.Kept != 2 {
		t.Fatalf("prune with every disk held: %+v %v", res, err)
	}
	// Sandbox 1 removed: b is held by none, a by sandbox 2.
	if err := os.RemoveAll(sb1); err != nil {
		t.Fatal(err)
	}
	if got := users(); got[a] != 1 || got[b] != 0 {
		t.Fatalf("users after a sandbox went: %v", got)
	}
	// Used at the cutoff: kept; unused since before it: removed.
	if res, err := c.Prune(now); err != nil || len(res.Removed) != 0 {
		t.Fatalf("prune at the last use: %+v %v", res, err)
	}
	res, err = c.Prune(now.Add(time.Second))
	if err != nil || len(res.Removed) != 1 || res.Removed[0].DiffID != b || res.Kept != 1 || res.FreedBytes != res.Removed[0].Bytes {
		t.Fatalf("prune: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "sha256", strings.Repeat("bb", 32)+".json")); !os.IsNotExist(err) {
		t.Fatalf("the pruned disk's record: %v", err)
	}
	// Sandbox 2 still reads a, whose cache copy goes once it is unheld
	// and old; its link keeps the data.
	want, err := os.ReadFile(link(sb2, a))
	if err != nil {
		t.Fatal(err)
	}
	disk, _, _ := c.paths(a)
	if err := os.Remove(disk); err != nil { // as a prune racing the link would
		t.Fatal(err)
	}
	if got, err := os.ReadFile(link(sb2, a)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("a sandbox's disk after the cache's copy went: %v", err)
	}
	// The next sandbox of b (and a) builds them again.
	now = now.Add(24 * time.Hour)
	sb3 := t.TempDir()
	for _, d := range []string{a, b} {
		if _, err := c.Use(d, open, link(sb3, d)); err != nil {
			t.Fatal(err)
		}
	}
	if builds != 4 {
		t.Fatalf("%d builds, want 4 (both pruned disks built again)", builds)
	}
	if got := users(); got[a] != 1 || got[b] != 1 {
		t.Fatalf("users of the rebuilt disks: %v", got)
	}
}

// TestCachePruneLeftovers: a build that stopped an hour ago is removed;
// one in progress is not.
func TestCachePruneLeftovers(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := Cache{Dir: t.TempDir(), Now: func() time.Time { return now }}
	dir := filepath.Join(c.Dir, "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, age := range map[string]time.Duration{".build-old": 2 * time.Hour, ".meta-old": 2 * time.Hour, ".build-new": time.Minute, "unrelated": 2 * time.Hour} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Prune(now); err != nil {
		t.Fatal(err)
	}
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, ",") != ".build-new,unrelated" {
		t.Fatalf("left after prune: %v", left)
	}
}
