// Command kbsload is a bounded load generator for `cocoon kbs serve` on
// loopback with sim evidence (real signatures): (1) the full protocol —
// attest with evidence bound to the session's nonce and the TEE key, then
// one resource, decrypted; (2) resource fetches with an existing token.
// It runs both on the embedded bbolt store, on PostgreSQL with one broker
// and with two replicas (a real server it starts, as the tests do), and
// prints operations per second, p50/p99 latencies and the ratios.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"cocoon.dev/cocoon/bench/internal/cpuprof"
	"cocoon.dev/cocoon/internal/serving"
	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func main() {
	bin := flag.String("cocoon", "bin/cocoon", "the cocoon binary")
	n := flag.Int("n", 3000, "operations per phase (bound)")
	maxTime := flag.Duration("time", 30*time.Second, "time bound per phase")
	workers := flag.Int("c", 4, "concurrent clients")
	profiles := flag.String("profiles", "", "keep the services' CPU profiles in this directory (for go tool pprof)")
	rounds := flag.Int("rounds", 3, "rounds of the setups, interleaved; the ratios are the medians of the rounds' ratios")
	flag.Parse()
	if err := run(*bin, *n, *maxTime, *workers, *rounds, *profiles); err != nil {
		fmt.Fprintln(os.Stderr, "kbsload:", err)
		os.Exit(1)
	}
}

type session struct {
	hc   *http.Client
	rd   map[string]any
	body []byte
	key  *ecdsa.PrivateKey
}

// setup is one store configuration: the embedded bbolt store with one
// broker, or PostgreSQL shared by one or two.
type setup struct {
	name     string
	replicas int
	pg       bool
}

// rates are a setup's figures (per second).
type rates struct{ full, token float64 }

func run(bin string, n int, maxTime time.Duration, workers, rounds int, keep string) error {
	work, err := os.MkdirTemp("", "kbsload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	auth, err := sim.LoadOrCreate(filepath.Join(work, "sim"))
	if err != nil {
		return err
	}
	setups := []setup{{"bbolt, 1 broker", 1, false}, {"PostgreSQL, 1 broker", 1, true}, {"PostgreSQL, 2 replicas", 2, true}}
	pg, err := testpg.Run()
	if errors.Is(err, testpg.ErrMissing) && os.Getenv("CI") == "" {
		fmt.Println("(no PostgreSQL here: the bbolt figures alone; install the postgresql package for the rest)")
		setups, pg = setups[:1], nil
	} else if err != nil {
		return err
	}
	if pg != nil {
		defer pg.Stop()
	}
	// The setups run one after another in each round, so that a machine
	// that gets busier or quieter shifts every setup of a round alike.
	var pgFull, pgToken, repFull, repToken []float64
	for round := 1; round <= max(rounds, 1); round++ {
		var got []rates
		for i, su := range setups {
			fmt.Printf("== round %d: %s\n", round, su.name)
			store := ""
			if su.pg {
				if store, err = pg.NewDatabase(context.Background()); err != nil {
					return err
				}
			}
			// The profiles of the first setup of the first round: where
			// the broker's time goes.
			first := round == 1 && i == 0
			profile := ""
			if first {
				profile = keep
			}
			r, err := runSetup(bin, filepath.Join(work, fmt.Sprint(round, "-", i)), auth, su, store, n, maxTime, workers, profile, first)
			if err != nil {
				return fmt.Errorf("%s: %w", su.name, err)
			}
			got = append(got, r)
		}
		if len(got) > 1 {
			pgFull, pgToken = append(pgFull, got[1].full/got[0].full), append(pgToken, got[1].token/got[0].token)
			repFull, repToken = append(repFull, got[2].full/got[1].full), append(repToken, got[2].token/got[1].token)
		}
	}
	if len(pgFull) > 0 {
		fmt.Printf("PostgreSQL, 1 broker vs bbolt (median of %d rounds): full protocol %.0f%%, token-only %.0f%% (target >= 75%%; rounds: %s / %s)\n",
			len(pgFull), 100*median(pgFull), 100*median(pgToken), percents(pgFull), percents(pgToken))
		fmt.Printf("PostgreSQL, 2 replicas vs 1 (median): full protocol %.2fx, token-only %.2fx (both replicas share the machine's cores with the database and the clients)\n",
			median(repFull), median(repToken))
	}
	return nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func percents(v []float64) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprintf("%.0f%%", 100*x)
	}
	return strings.Join(out, " ")
}

// runSetup measures one setup: (1) the full protocol — auth on one
// replica, attest on the next, the resource on the first — and (2)
// resource fetches with an existing token, spread over the replicas.
func runSetup(bin, work string, auth *sim.Authority, su setup, store string, n int, maxTime time.Duration, workers int, keep string, profile bool) (rates, error) {
	var addrs []string
	for range su.replicas {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return rates{}, err
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	state := filepath.Join(work, "kbs")
	if out, err := exec.Command(bin, "kbs", "init", "--state", state, "--listen", addrs[0]).CombinedOutput(); err != nil {
		return rates{}, fmt.Errorf("init: %v %s", err, out)
	}
	// The brokers of each phase are started anew, each with its own CPU
	// profile when profiling; they read the same state (the second
	// phase's verify the first's tokens).
	serve := func(prof string) ([]*exec.Cmd, error) {
		var cmds []*exec.Cmd
		for _, addr := range addrs {
			cmd := exec.Command(bin, "kbs", "serve", "--state", state, "--listen", addr, "--allow-sim", "--offline",
				"--sim-roots", filepath.Join(work, "..", "sim", sim.FileRoots))
			cmd.Env = os.Environ()
			if store != "" {
				cmd.Env = append(cmd.Env, "COCOON_KBS_STORE="+store)
			}
			if prof != "" {
				cmd.Env = append(cmd.Env, "COCOON_CPUPROFILE="+prof)
			}
			if _, err := serving.Start(cmd, 20*time.Second); err != nil {
				stopAll(cmds)
				return nil, err
			}
			cmds = append(cmds, cmd)
		}
		return cmds, nil
	}
	prof1, prof2 := "", ""
	if profile {
		prof1, prof2 = filepath.Join(work, "phase1.cpu"), filepath.Join(work, "phase2.cpu")
	}
	cmds, err := serve(prof1)
	if err != nil {
		return rates{}, err
	}
	defer func() { stopAll(cmds) }()
	put := exec.Command(bin, "kbs", "put", "kbs:///bench/key/k1", "-", "--state", state)
	put.Stdin = strings.NewReader("a 32-byte secret for the bench..")
	if out, err := put.CombinedOutput(); err != nil {
		return rates{}, fmt.Errorf("put: %v %s", err, out)
	}
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	base, err := client.HTTPClient(ca, &http.Transport{MaxIdleConnsPerHost: workers * 4})
	if err != nil {
		return rates{}, err
	}
	urls := make([]string, len(addrs))
	for i, a := range addrs {
		urls[i] = "https://" + a
	}
	newSession := func(url string) (*session, error) {
		jar, _ := cookiejar.New(nil)
		hc := *base
		hc.Jar = jar
		resp, err := hc.Post(url+"/kbs/v0/auth", "application/json", strings.NewReader(`{"version":"0.4.0","tee":"sim","extra-params":""}`))
		if err != nil {
			return nil, err
		}
		var ch struct{ Nonce string }
		json.NewDecoder(resp.Body).Decode(&ch)
		resp.Body.Close()
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		j, _ := jose.JSONWebKey{Key: &k.PublicKey}.MarshalJSON()
		var pub map[string]any
		json.Unmarshal(j, &pub)
		rd := map[string]any{"nonce": ch.Nonce, "tee-pubkey": pub}
		canon, _ := tee.CanonicalJSON(rd)
		rep, err := auth.Report(sim.Launch{}, tee.BindKeyBroker.ReportData(canon))
		if err != nil {
			return nil, err
		}
		ev, _ := json.Marshal(&tee.Evidence{TEE: tee.Sim, Report: rep, Certs: map[string][]byte{"vcek": auth.Vcek.Raw}})
		body, _ := json.Marshal(map[string]any{"runtime-data": rd, "tee-evidence": json.RawMessage(ev)})
		return &session{hc: &hc, rd: rd, body: body, key: k}, nil
	}
	attestAndGet := func(s *session, attestURL, getURL string, decrypt bool) (string, error) {
		resp, err := s.hc.Post(attestURL+"/kbs/v0/attest", "application/json", bytes.NewReader(s.body))
		if err != nil {
			return "", err
		}
		var t struct{ Token string }
		json.NewDecoder(resp.Body).Decode(&t)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("attest: %s", resp.Status)
		}
		key := s.key
		if !decrypt {
			key = nil
		}
		return t.Token, get(s.hc, getURL, "", key)
	}
	// Phase 1: full protocol. Sessions and evidence are made first (the
	// attester's work, timed apart); session i began on replica i.
	pstart := time.Now()
	sessions := make([]*session, n)
	for i := range sessions {
		if sessions[i], err = newSession(urls[i%len(urls)]); err != nil {
			return rates{}, err
		}
	}
	prep := time.Since(pstart)
	tokens := make([]string, n)
	lat, elapsed, failed := load(n, workers, maxTime, func(i int) error {
		// Every 100th response is decrypted by the client, as a check.
		tok, err := attestAndGet(sessions[i], urls[(i+1)%len(urls)], urls[i%len(urls)], i%100 == 0)
		tokens[i] = tok
		return err
	})
	var r rates
	r.full = report("attest + 1 resource (broker throughput)", lat, elapsed, failed, workers, "target >= 800/s, p99 < 25ms")
	fmt.Printf("  (auth + sim evidence for the %d sessions took %v apart: %.0f/s)\n", n, prep.Round(time.Millisecond), float64(n)/prep.Seconds())
	if err := terminateAll(cmds); err != nil {
		return r, err
	}
	if profile {
		if err := cpuprof.Report(prof1, keep, "  the broker (full protocol, auth included)", "the sim report (P-384), the chain"); err != nil {
			return r, err
		}
	}
	if cmds, err = serve(prof2); err != nil {
		return r, err
	}
	// Phase 2: resources with an existing token (bearer).
	tok, key := tokens[0], sessions[0].key
	lat, elapsed, failed = load(n*3, workers, maxTime, func(i int) error {
		// The client decrypts every 100th response (and the first): the
		// figure is the broker's throughput, not the client's ECDH.
		if i%100 == 0 {
			return get(base, urls[i%len(urls)], tok, key)
		}
		return get(base, urls[i%len(urls)], tok, nil)
	})
	r.token = report("resource with an existing token (broker throughput)", lat, elapsed, failed, workers, "target >= 5000/s")
	if err := terminateAll(cmds); err != nil {
		return r, err
	}
	if profile {
		if err := cpuprof.Report(prof2, keep, "  the broker (token only)", "the token's signature (P-256)"); err != nil {
			return r, err
		}
	}
	if r.full > 0 {
		fmt.Printf("token-only fetches / full protocol: %.1fx (target >= 5x)\n", r.token/r.full)
	}
	if r.full == 0 || r.token == 0 {
		return r, errors.New("a phase had no successful operation")
	}
	return r, nil
}

func stopAll(cmds []*exec.Cmd) {
	for _, c := range cmds {
		serving.Stop(c)
	}
}

// terminateAll ends the brokers gracefully (their CPU profiles are
// written on the way out).
func terminateAll(cmds []*exec.Cmd) error {
	var first error
	for _, c := range cmds {
		if err := serving.Terminate(c, 10*time.Second); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func get(hc *http.Client, url, bearer string, key *ecdsa.PrivateKey) error {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url+"/kbs/v0/resource/bench/key/k1", nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("resource: %s %s", resp.Status, b)
	}
	if key == nil {
		if !bytes.Contains(b, []byte(`"ciphertext"`)) {
			return fmt.Errorf("not a JWE")
		}
		return nil
	}
	pt, err := client.Decrypt(b, key)
	if err != nil {
		return err
	}
	if len(pt) != 32 {
		return fmt.Errorf("resource of %d bytes", len(pt))
	}
	return nil
}

func load(n, workers int, maxTime time.Duration, op func(int) error) ([]time.Duration, time.Duration, int64) {
	var next atomic.Int64
	var failed atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, n)
	deadline := time.Now().Add(maxTime)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) || time.Now().After(deadline) {
					return
				}
				t0 := time.Now()
				if err := op(int(i - 1)); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "first failure:", err)
					}
					continue
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), failed.Load()
}

// report prints a phase's figures and returns its rate (per second).
func report(what string, lat []time.Duration, elapsed time.Duration, failed int64, workers int, target string) float64 {
	if len(lat) == 0 {
		fmt.Printf("%s: nothing succeeded\n", what)
		return 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("%s: %d ok, %d failed, %.0f/s with %d clients; p50 %v, p99 %v (%s)\n", what, len(lat), failed,
		float64(len(lat))/elapsed.Seconds(), workers, lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond), target)
	return float64(len(lat)) / elapsed.Seconds()
}
