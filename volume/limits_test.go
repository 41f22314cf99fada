package volume

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestKDFCostsBounded plays headers that set a KDF's cost past anything
// cryptsetup creates (the review ran them past every limit and to 1.2 GiB
// of memory): each is refused before any derivation runs, quickly, with an
// error naming the parameter; the process's memory does not grow.
func TestKDFCostsBounded(t *testing.T) {
	cases := []struct {
		name string
		kdf  string
		mut  func(h *Header)
		want string
	}{
		{"pbkdf2 iterations", "pbkdf2", func(h *Header) { h.Metadata.Keyslots["0"].KDF.Iterations = 1<<31 - 1 }, "keyslot 0: pbkdf2 iterations = 2147483647"},
		{"digest iterations", "pbkdf2", func(h *Header) { h.Metadata.Digests["0"].Iterations = 1<<31 - 1 }, "digest: pbkdf2 iterations = 2147483647"},
		{"argon2 time", "argon2id", func(h *Header) { h.Metadata.Keyslots["0"].KDF.Time = 1<<31 - 1 }, "keyslot 0: argon2id time = 2147483647"},
		{"argon2 memory", "argon2id", func(h *Header) { h.Metadata.Keyslots["0"].KDF.Memory = 4<<20 + 1 }, "argon2id memory = 4194305 KiB"},
		{"argon2 threads", "argon2id", func(h *Header) { h.Metadata.Keyslots["0"].KDF.CPUs = 255 }, "argon2id cpus = 255"},
		{"stripes", "pbkdf2", func(h *Header) { h.Metadata.Keyslots["0"].AF.Stripes = 100000 }, "af stripes = 100000"},
		{"keyslots", "pbkdf2", func(h *Header) {
			d := h.Metadata.Digests["0"]
			for len(d.Keyslots) <= MaxKeyslotsTried {
				d.Keyslots = append(d.Keyslots, "0")
			}
		}, "the digest lists 9 keyslots"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, pass, _ := format(t, tc.kdf, 1<<20)
			rewriteHeader(t, p, tc.mut)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			d, _, err := Open(p, pass, true)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if d != nil {
				d.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v, want a refusal naming %q", err, tc.want)
			}
			if took > 2*time.Second {
				t.Errorf("the refusal took %s: the KDF ran", took)
			}
			if grew := int64(after.Sys) - int64(before.Sys); grew > 64<<20 {
				t.Errorf("memory grew by %d MiB", grew>>20)
			}
		})
	}
}

// TestArgon2MemoryBoundBySandbox: argon2 memory past what the sandbox has is
// refused with the budget named, even under cryptsetup's own maximum.
func TestArgon2MemoryBoundBySandbox(t *testing.T) {
	k := KDF{Type: "argon2id", Time: 4, Memory: 1 << 20, CPUs: 4}
	if err := checkKDF(k, 512<<10); err == nil || !strings.Contains(err.Error(), "at most 524288 KiB") {
		t.Errorf("1 GiB with a 512 MiB budget: %v", err)
	}
	if err := checkKDF(k, 2<<20); err != nil {
		t.Errorf("1 GiB with a 2 GiB budget: %v", err)
	}
	if b := argon2MemoryBudget(); b <= 0 {
		t.Errorf("no memory budget read on this machine: %d", b)
	}
}
