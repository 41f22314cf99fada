// Command asload is a bounded load generator for `cocoon as serve` on
// loopback: each operation gets a challenge, makes sim evidence binding the
// nonce (real ECDSA signatures; the service verifies them with a cached
// chain) and asks for a token. It prints attestations per second and the
// p50/p99 latency of POST /attestation.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"cocoon.dev/cocoon/bench/internal/cpuprof"
	"cocoon.dev/cocoon/internal/serving"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

func main() {
	bin := flag.String("cocoon", "bin/cocoon", "the cocoon binary")
	count := flag.Int("n", 5000, "attestations to run (bound)")
	maxTime := flag.Duration("time", 30*time.Second, "time bound")
	workers := flag.Int("c", 4, "concurrent clients")
	profiles := flag.String("profiles", "", "keep the services' CPU profiles in this directory (for go tool pprof)")
	flag.Parse()
	if err := run(*bin, *count, *maxTime, *workers, *profiles); err != nil {
		fmt.Fprintln(os.Stderr, "asload:", err)
		os.Exit(1)
	}
}

func run(bin string, count int, maxTime time.Duration, workers int, keep string) error {
	work, err := os.MkdirTemp("", "asload")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	auth, err := sim.LoadOrCreate(filepath.Join(work, "sim"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "as", "serve", "--listen", "127.0.0.1:0", "--state", filepath.Join(work, "as"),
		"--trust-sim", "--sim-roots", filepath.Join(work, "sim", sim.FileRoots), "--offline")
	prof := filepath.Join(work, "as.cpu")
	cmd.Env = append(os.Environ(), "COCOON_CPUPROFILE="+prof)
	url, err := serving.Start(cmd, 20*time.Second)
	if err != nil {
		return err
	}
	defer serving.Stop(cmd)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers * 2}, Timeout: 10 * time.Second}
	post := func(path string, body []byte) (map[string]any, time.Duration, error) {
		start := time.Now()
		resp, err := client.Post(url+path, "application/json", bytes.NewReader(body))
		if err != nil {
			return nil, 0, err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if resp.StatusCode != 200 {
			return nil, d, fmt.Errorf("%s: %s: %s", path, resp.Status, b)
		}
		var m map[string]any
		return m, d, json.Unmarshal(b, &m)
	}
	var next atomic.Int64
	vcek := auth.Vcek.Raw
	// prepare gets a challenge and makes evidence that binds its nonce.
	prepare := func() ([]byte, error) {
		ch, _, err := post("/challenge", nil)
		if err != nil {
			return nil, err
		}
		nonce := ch["nonce"].(string)
		structured := map[string]any{"nonce": nonce}
		canon, _ := tee.CanonicalJSON(structured)
		rep, err := auth.Report(sim.Launch{}, tee.BindAttestationService.ReportData(canon))
		if err != nil {
			return nil, err
		}
		ev, _ := json.Marshal(&tee.Evidence{TEE: tee.Sim, Report: rep, Certs: map[string][]byte{"vcek": vcek}})
		return json.Marshal(map[string]any{"tee": "sim", "evidence": base64.RawURLEncoding.EncodeToString(ev), "nonce": nonce,
			"runtime_data": map[string]any{"structured": structured}})
	}
	attestOne := func(body []byte) (time.Duration, error) {
		res, d, err := post("/attestation", body)
		if err != nil {
			return 0, err
		}
		if res["token"] == nil {
			return 0, fmt.Errorf("no token")
		}
		return d, nil
	}
	// Warm up: the first request verifies the whole chain.
	b0, err := prepare()
	if err != nil {
		return err
	}
	if _, err := attestOne(b0); err != nil {
		return err
	}
	// Challenges and evidence first (the attester's work, timed apart), so
	// that the timed phase loads the service only.
	pstart := time.Now()
	bodies := make([][]byte, count)
	for i := range bodies {
		if bodies[i], err = prepare(); err != nil {
			return err
		}
	}
	prep := time.Since(pstart)

	var failed atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, count)
	deadline := time.Now().Add(maxTime)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(count) || time.Now().After(deadline) {
					return
				}
				d, err := attestOne(bodies[i-1])
				if err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "first failure:", err)
					}
					continue
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return fmt.Errorf("no attestation succeeded")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("%d attestations (%d failed) in %v with %d clients on loopback (client and service share this machine's cores)\n", len(lat), failed.Load(), elapsed.Round(time.Millisecond), workers)
	fmt.Printf("service throughput: %.0f POST /attestation per second (verify sim evidence + appraise + sign a token)\n", float64(len(lat))/elapsed.Seconds())
	fmt.Printf("(preparing the %d challenges and sim reports took %v apart: %.0f/s)\n", count, prep.Round(time.Millisecond), float64(count)/prep.Seconds())
	fmt.Printf("POST /attestation latency: p50 %v, p99 %v (targets: >= 1000/s, p99 < 20ms)\n",
		lat[len(lat)/2].Round(10*time.Microsecond), lat[len(lat)*99/100].Round(10*time.Microsecond))
	if err := serving.Terminate(cmd, 10*time.Second); err != nil {
		return err
	}
	return cpuprof.Report(prof, keep, "the attestation service", "verifying the sim report (P-384) and the chain")
}
