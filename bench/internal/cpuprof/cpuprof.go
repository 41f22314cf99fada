// Package cpuprof reads a CPU profile of a cocoon service (written under
// COCOON_CPUPROFILE) and says where its time went, for the load generators.
package cpuprof

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// ECDSAVerify and ECDSASign are the functions every ECDSA verification and
// signature in the standard library runs through (P-256 and P-384 alike).
var (
	ECDSAVerify = []string{"crypto/internal/fips140/ecdsa.Verify"}
	ECDSASign   = []string{"crypto/internal/fips140/ecdsa.Sign"}
)

// Profile is a parsed CPU profile.
type Profile struct {
	p   *profile.Profile
	cpu int // the index of the cpu nanoseconds in a sample's values
}

// Read parses the profile at path.
func Read(path string) (*Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			return &Profile{p, i}, nil
		}
	}
	return nil, fmt.Errorf("%s: no cpu/nanoseconds samples", path)
}

// Total is the CPU time the profile sampled.
func (p *Profile) Total() time.Duration {
	var t int64
	for _, s := range p.p.Sample {
		t += s.Value[p.cpu]
	}
	return time.Duration(t)
}

// Share is the fraction of the sampled CPU time spent in (or below) a
// function whose name starts with one of prefixes.
func (p *Profile) Share(prefixes ...string) float64 { return p.ShareExcept(prefixes, nil) }

// ShareExcept is the fraction of the sampled CPU time in a function
// matching prefixes, in samples whose stack has no function matching
// except.
func (p *Profile) ShareExcept(prefixes, except []string) float64 {
	var in, all int64
	for _, s := range p.p.Sample {
		all += s.Value[p.cpu]
		if stackHas(s, prefixes) && !stackHas(s, except) {
			in += s.Value[p.cpu]
		}
	}
	if all == 0 {
		return 0
	}
	return float64(in) / float64(all)
}

func stackHas(s *profile.Sample, prefixes []string) bool {
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			for _, pre := range prefixes {
				if strings.HasPrefix(l.Function.Name, pre) {
					return true
				}
			}
		}
	}
	return false
}

// Top lists the n functions with the most CPU time of their own (flat),
// among samples outside skip, as "share name" lines: where the rest of the
// time goes.
func (p *Profile) Top(n int, skip ...string) []string {
	flat := map[string]int64{}
	var all int64
	for _, s := range p.p.Sample {
		all += s.Value[p.cpu]
		if stackHas(s, skip) || len(s.Location) == 0 || len(s.Location[0].Line) == 0 || s.Location[0].Line[0].Function == nil {
			continue
		}
		flat[s.Location[0].Line[0].Function.Name] += s.Value[p.cpu]
	}
	names := make([]string, 0, len(flat))
	for k := range flat {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return flat[names[i]] > flat[names[j]] })
	var out []string
	for _, name := range names[:min(n, len(names))] {
		out = append(out, fmt.Sprintf("%5.1f%%  %s", 100*float64(flat[name])/float64(all), name))
	}
	return out
}

// Report prints where a service's CPU time went: the share in ECDSA
// verification (what cannot be avoided: the evidence's signatures), the
// share in ECDSA signing (its tokens), and the top functions of the rest.
// With keep set, the profile is also copied into that directory.
func Report(path, keep, service, verifies string) error {
	p, err := Read(path)
	if err != nil {
		return err
	}
	if keep != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(keep, filepath.Base(path))
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
		fmt.Printf("    profile kept: %s (go tool pprof -top %s)\n", dst, dst)
	}
	v, s := p.Share(ECDSAVerify...), p.Share(ECDSASign...)
	fmt.Printf("%s CPU profile: %v sampled; %.0f%% in ECDSA verification (%s), %.0f%% in ECDSA signing, %.0f%% elsewhere (target: verification >= 70%%)\n",
		service, p.Total().Round(time.Millisecond), 100*v, verifies, 100*s, 100*(1-v-s))
	parts := []string{fmt.Sprintf("other elliptic-curve arithmetic (ECDH of the JWE, key generation) %.0f%%", 100*p.ShareExcept(
		[]string{"crypto/internal/fips140/nistec."}, append(ECDSAVerify, ECDSASign...)))}
	for _, g := range groups {
		if sh := p.Share(g.prefixes...); sh >= 0.005 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", g.name, 100*sh))
		}
	}
	fmt.Printf("    below (overlapping): %s\n", strings.Join(parts, ", "))
	for _, l := range p.Top(5, append(ECDSAVerify, ECDSASign...)...) {
		fmt.Println("    elsewhere, flat:", l)
	}
	return nil
}

// groups are the subsystems a service's time is reported under.
var groups = []struct {
	name     string
	prefixes []string
}{
	{"JSON", []string{"encoding/json."}},
	{"TLS", []string{"crypto/tls."}},
	{"HTTP", []string{"net/http."}},
	{"certificate parsing", []string{"crypto/x509.Parse", "crypto/x509.parse", "github.com/google/go-sev-guest/kds.", "github.com/google/go-sev-guest/verify/trust.ParseCert"}},
	{"OPA", []string{"github.com/open-policy-agent/"}},
	{"allocation", []string{"runtime.mallocgc"}},
	{"GC", []string{"runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.bgsweep"}},
	{"syscalls", []string{"syscall.", "internal/runtime/syscall."}},
}
