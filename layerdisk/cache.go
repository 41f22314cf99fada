package layerdisk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Cache keeps layer disks by diff_id in a directory shared by every
// sandbox of the node: DIR/sha256/<hex>.disk and its .json. The host
// trusts it for nothing but speed: a guest opens a disk only against the
// root hash its policy pins.
//
// A sandbox takes a disk with Use, which hard-links it into the
// sandbox's own directory: the link count says how many sandboxes hold a
// disk, and Prune, removing only the cache's name, never takes a disk
// from under a VM (its link keeps the data until the sandbox is removed).
type Cache struct {
	Dir string
	// Now is the clock that stamps a disk's last use (time.Now if nil).
	Now func() time.Time
}

var diffIDRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func (c Cache) paths(diffID string) (disk, meta string, err error) {
	if !diffIDRE.MatchString(diffID) {
		return "", "", fmt.Errorf("layer disk: %q is not a sha256 diff_id", diffID)
	}
	base := filepath.Join(c.Dir, "sha256", strings.TrimPrefix(diffID, "sha256:"))
	return base + ".disk", base + ".json", nil
}

// Get returns the disk of a layer, building it from the layer's
// uncompressed tar (open) when the cache lacks it. Builds go to a
// temporary file renamed into place, so a crash leaves no half disk.
func (c Cache) Get(diffID string, open func() (io.ReadCloser, error)) (string, *Info, error) {
	disk, meta, err := c.paths(diffID)
	if err != nil {
		return "", nil, err
	}
	if b, err := os.ReadFile(meta); err == nil {
		var in Info
		if json.Unmarshal(b, &in) == nil && in.DiffID == diffID {
			if _, err := os.Stat(disk); err == nil {
				return disk, &in, nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(disk), 0o755); err != nil {
		return "", nil, err
	}
	f, err := os.CreateTemp(filepath.Dir(disk), ".build-*")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	r, err := open()
	if err != nil {
		return "", nil, err
	}
	defer r.Close()
	in, err := Make(r, diffID, f)
	if err != nil {
		return "", nil, fmt.Errorf("layer disk of %s: %w", diffID, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return "", nil, err
	}
	if err := f.Sync(); err != nil {
		return "", nil, err
	}
	if err := os.Rename(f.Name(), disk); err != nil {
		return "", nil, err
	}
	b, err := json.Marshal(in)
	if err != nil {
		return "", nil, err
	}
	// Its own temporary name: two sandboxes may build one layer at once.
	mf, err := os.CreateTemp(filepath.Dir(meta), ".meta-*")
	if err != nil {
		return "", nil, err
	}
	defer os.Remove(mf.Name())
	if _, err := mf.Write(b); err != nil {
		mf.Close()
		return "", nil, err
	}
	if err := mf.Chmod(0o644); err != nil {
		mf.Close()
		return "", nil, err
	}
	if err := mf.Close(); err != nil {
		return "", nil, err
	}
	return disk, in, os.Rename(mf.Name(), meta)
}

// Use returns the disk of a layer as the hard link dst (made or
// replaced; on the cache's filesystem), building the disk when the cache
// lacks it, and stamps its last use. A disk pruned between the lookup
// and the link is built again.
func (c Cache) Use(diffID string, open func() (io.ReadCloser, error), dst string) (*Info, error) {
	for try := 0; ; try++ {
		disk, in, err := c.Get(diffID, open)
		if err != nil {
			return nil, err
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		err = os.Link(disk, dst)
		if errors.Is(err, fs.ErrNotExist) && try == 0 {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("layer disk of %s: link into the sandbox: %w", diffID, err)
		}
		now := c.now()
		if err := os.Chtimes(disk, now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return in, nil
	}
}

func (c Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Entry is a disk in the cache.
type Entry struct {
	DiffID string `json:"diff_id"`
	// Bytes is the disk's size (squashfs and hash tree).
	Bytes int64 `json:"bytes"`
	// Users is how many sandboxes hold the disk (its other links).
	Users int `json:"users"`
	// LastUsed is when a sandbox last took it (or it was built).
	LastUsed time.Time `json:"last_used"`
}

// List returns the cache's disks, by diff_id. Leftovers of builds that
// did not finish are not listed (Prune removes them).
func (c Cache) List() ([]Entry, error) {
	ents, err := os.ReadDir(filepath.Join(c.Dir, "sha256"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), ".disk")
		if !ok || !diffIDRE.MatchString("sha256:"+hex) {
			continue
		}
		st, err := os.Stat(filepath.Join(c.Dir, "sha256", e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned meanwhile
		}
		if err != nil {
			return nil, err
		}
		users := 0
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Nlink > 1 {
			users = int(sys.Nlink - 1)
		}
		out = append(out, Entry{DiffID: "sha256:" + hex, Bytes: st.Size(), Users: users, LastUsed: st.ModTime()})
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.DiffID, b.DiffID) })
	return out, nil
}

// PruneResult says what Prune removed and kept.
type PruneResult struct {
	Removed []Entry `json:"removed"`
	// Kept counts the disks left: held by a sandbox, or used since the
	// cutoff.
	Kept int `json:"kept"`
	// FreedBytes is the removed disks' size.
	FreedBytes int64 `json:"freed_bytes"`
}

// Prune removes the disks no sandbox holds that were last used before
// cutoff, and builds older than an hour that never finished. A disk a
// sandbox links meanwhile keeps its data (the link holds it); the cache
// builds it again for the next sandbox.
func (c Cache) Prune(cutoff time.Time) (PruneResult, error) {
	var res PruneResult
	list, err := c.List()
	if err != nil {
		return res, err
	}
	for _, e := range list {
		if e.Users > 0 || !e.LastUsed.Before(cutoff) {
			res.Kept++
			continue
		}
		disk, meta, _ := c.paths(e.DiffID)
		// The record first: a crash in between leaves a disk without a
		// record, which Get builds again rather than trusting.
		if err := os.Remove(meta); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
		if err := os.Remove(disk); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, err
		}
		res.Removed = append(res.Removed, e)
		res.FreedBytes += e.Bytes
	}
	ents, err := os.ReadDir(filepath.Join(c.Dir, "sha256"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, err
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".build-") && !strings.HasPrefix(e.Name(), ".meta-") {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(c.now().Add(-time.Hour)) {
			_ = os.Remove(filepath.Join(c.Dir, "sha256", e.Name()))
		}
	}
	return res, nil
}
