package volume

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Bounds on what a LUKS2 header — untrusted input: the host provides the
// image — may make an unlock cost. Each is above what cryptsetup creates,
// with a margin, so real volumes open; a header past one is refused before
// any key derivation runs, with an error naming the parameter.
const (
	// MaxPBKDF2Iterations bounds pbkdf2 keyslot and digest iterations.
	// cryptsetup calibrates keyslots to 2 s (about 2-5 million rounds of
	// sha256 on today's CPUs) and digests to far fewer.
	MaxPBKDF2Iterations = 10_000_000
	// MaxArgon2Time bounds argon2 passes (cryptsetup's 2 s calibration
	// gives 4-10 at its default memory).
	MaxArgon2Time = 32
	// MaxArgon2MemoryKiB is cryptsetup's own maximum (4 GiB); the sandbox's
	// memory lowers it further (see argon2MemoryBudget).
	MaxArgon2MemoryKiB = 4 << 20
	// MaxArgon2Threads bounds argon2 lanes (cryptsetup uses at most 4).
	MaxArgon2Threads = 16
	// MaxAFStripes: LUKS2 as cryptsetup writes it always has 4000.
	MaxAFStripes = 4000
	// MaxKeyslotsTried bounds how many keyslots one unlock tries, so the
	// per-keyslot bounds also bound the whole unlock.
	MaxKeyslotsTried = 8
)

// checkKDF refuses KDF parameters past the bounds. memBudgetKiB is the
// argon2 memory this process may spend (0: no figure known; only the fixed
// bound applies).
func checkKDF(k KDF, memBudgetKiB int64) error {
	switch k.Type {
	case "pbkdf2":
		if k.Iterations < 1 || k.Iterations > MaxPBKDF2Iterations {
			return fmt.Errorf("pbkdf2 iterations = %d; cocoon accepts 1 to %d (cryptsetup creates a few million at most)", k.Iterations, MaxPBKDF2Iterations)
		}
	case "argon2id", "argon2i":
		if k.Time < 1 || k.Time > MaxArgon2Time {
			return fmt.Errorf("%s time = %d; cocoon accepts 1 to %d", k.Type, k.Time, MaxArgon2Time)
		}
		if k.CPUs < 1 || k.CPUs > MaxArgon2Threads {
			return fmt.Errorf("%s cpus = %d; cocoon accepts 1 to %d", k.Type, k.CPUs, MaxArgon2Threads)
		}
		if k.Memory < 8 || k.Memory > MaxArgon2MemoryKiB {
			return fmt.Errorf("%s memory = %d KiB; cocoon accepts 8 to %d KiB (cryptsetup's maximum)", k.Type, k.Memory, MaxArgon2MemoryKiB)
		}
		if memBudgetKiB > 0 && int64(k.Memory) > memBudgetKiB {
			return fmt.Errorf("%s memory = %d KiB; this sandbox can spend at most %d KiB (half of its available memory): re-create the volume with a smaller --pbkdf-memory, or give the sandbox more memory", k.Type, k.Memory, memBudgetKiB)
		}
	}
	return nil
}

// argon2MemoryBudget is half of the memory available to this process: the
// smaller of MemAvailable and the cgroup's memory.max less its usage (0 when
// neither can be read).
func argon2MemoryBudget() int64 {
	var avail int64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := bytes.Fields(sc.Bytes())
			if len(f) >= 2 && string(f[0]) == "MemAvailable:" {
				avail, _ = strconv.ParseInt(string(f[1]), 10, 64) // KiB
			}
		}
	}
	if limit := cgroupMemoryLeft(); limit > 0 && (avail == 0 || limit < avail) {
		avail = limit
	}
	return avail / 2
}

// cgroupMemoryLeft is memory.max - memory.current of this process's cgroup
// (v2), in KiB; 0 when unlimited or unknown.
func cgroupMemoryLeft() int64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	rel, ok := bytes.CutPrefix(bytes.TrimSpace(b), []byte("0::"))
	if !ok {
		return 0
	}
	dir := "/sys/fs/cgroup" + string(rel)
	read := func(name string) int64 {
		v, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			return 0
		}
		n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		return n
	}
	max := read("memory.max") // "max" parses as 0: unlimited
	if max <= 0 {
		return 0
	}
	return (max - read("memory.current")) / 1024
}
