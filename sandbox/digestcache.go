package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"cocoon.dev/cocoon/guest"
)

// fileAgentDigest caches the digest of the agent binary in the runtime root:
// the simulated secure processor measures the binary at every launch, and
// hashing 18 MB was the longest step of a process-backend launch (10 ms).
const fileAgentDigest = "agent-digest.json"

// digestEntry is a file's digest with the identity it was computed for.
type digestEntry struct {
	Path string `json:"path"`
	// Identity is the device, inode, size, modification and change times:
	// writing the file, replacing it or touching its times changes the
	// change time, which user space cannot set. An entry is written only
	// for a file whose change time is a second old (git's "racily clean"
	// rule): a later change then always gets another change time, even on
	// a file system whose clock is coarse.
	Identity string `json:"identity"`
	Digest   string `json:"digest"`
}

func fileIdentity(path string) (id string, changed time.Time, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", time.Time{}, err
	}
	return fmt.Sprintf("%d:%d:%d:%d.%09d:%d.%09d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec),
		time.Unix(st.Ctim.Sec, st.Ctim.Nsec), nil
}

// agentDigest returns guest.FileDigest(path), from the cache in root when
// the file is the one it was computed for; now is the time.
func (r Root) agentDigest(path string, now time.Time) (string, error) {
	cache := filepath.Join(string(r), fileAgentDigest)
	before, changed, err := fileIdentity(path)
	if err != nil {
		return "", err
	}
	var e digestEntry
	if b, err := os.ReadFile(cache); err == nil && json.Unmarshal(b, &e) == nil && e.Path == path && e.Identity == before && e.Digest != "" {
		return e.Digest, nil
	}
	d, err := guest.FileDigest(path)
	if err != nil {
		return "", err
	}
	// Kept only if the file did not change while it was read.
	if after, _, err := fileIdentity(path); err == nil && after == before && now.Sub(changed) > time.Second {
		_ = writeCache(cache, digestEntry{Path: path, Identity: before, Digest: d})
	}
	return d, nil
}

// writeCache replaces the cache file through a temporary file of its own,
// so that concurrent launches never interleave their writes.
func writeCache(path string, e digestEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), fileAgentDigest+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
