package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MaxSeccompBytes bounds a seccomp profile (containerd's default is ~20 KiB).
const MaxSeccompBytes = 1 << 20

// SeccompProfile parses a seccomp profile as the agent API carries it (an
// OCI LinuxSeccomp as JSON) and returns its canonical form — the syscall
// rules in a fixed order, so that the same rules give the same profile
// whatever order the host's runtime wrote them in — and that form's digest,
// "sha256:<hex>", which a policy pins. The agent applies exactly the
// canonical form it hashed. Profiles that hand decisions to a listener
// (SCMP_ACT_NOTIFY, listenerPath) are refused: nothing in a sandbox serves
// one.
func SeccompProfile(b []byte) (*specs.LinuxSeccomp, string, error) {
	if len(b) > MaxSeccompBytes {
		return nil, "", fmt.Errorf("seccomp profile is %d bytes; at most %d", len(b), MaxSeccompBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p specs.LinuxSeccomp
	if err := dec.Decode(&p); err != nil {
		return nil, "", fmt.Errorf("seccomp profile: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, "", errors.New("seccomp profile: data after the JSON object")
	}
	if p.DefaultAction == "" {
		return nil, "", errors.New("seccomp profile has no defaultAction")
	}
	if p.ListenerPath != "" || p.ListenerMetadata != "" || p.DefaultAction == specs.ActNotify {
		return nil, "", errors.New("seccomp profile hands decisions to a listener (SCMP_ACT_NOTIFY, listenerPath): nothing in a sandbox serves one")
	}
	keys := make([]string, len(p.Syscalls))
	for i, r := range p.Syscalls {
		if r.Action == specs.ActNotify {
			return nil, "", fmt.Errorf("seccomp profile rule %d hands decisions to a listener (SCMP_ACT_NOTIFY): nothing in a sandbox serves one", i)
		}
		k, err := json.Marshal(r)
		if err != nil {
			return nil, "", fmt.Errorf("seccomp profile rule %d: %w", i, err)
		}
		keys[i] = string(k)
	}
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
	sorted := make([]specs.LinuxSyscall, len(idx))
	for i, j := range idx {
		sorted[i] = p.Syscalls[j]
	}
	p.Syscalls = sorted
	canon, err := json.Marshal(&p)
	if err != nil {
		return nil, "", fmt.Errorf("seccomp profile: %w", err)
	}
	sum := sha256.Sum256(canon)
	return &p, "sha256:" + hex.EncodeToString(sum[:]), nil
}
