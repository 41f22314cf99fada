package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/kbs"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

// simAttester makes sim evidence with the harness's simulated secure
// processor (the broker trusts its roots with --allow-sim).
type simAttester struct{ auth *sim.Authority }

func (a simAttester) Kind() tee.Kind { return tee.Sim }

func (a simAttester) Evidence(_ context.Context, rd [64]byte) (*tee.Evidence, error) {
	rep, err := a.auth.Report(sim.Launch{}, rd)
	if err != nil {
		return nil, err
	}
	return &tee.Evidence{TEE: tee.Sim, Report: rep, Certs: map[string][]byte{"vcek": a.auth.Vcek.Raw}}, nil
}

// TestKBSReplicaKilledUnderLoad: clients run the full KBS protocol and an
// admin puts new versions against two replicas on PostgreSQL; one replica
// is killed with SIGKILL in the middle. Every operation completes (on the
// other replica when its first one died), every released value is one
// that was put, and every acknowledged put is there afterwards, once.
func TestKBSReplicaKilledUnderLoad(t *testing.T) {
	x := newH(t)
	auth, err := sim.LoadOrCreate(filepath.Join(x.root, "sim"))
	if err != nil {
		t.Fatal(err)
	}
	url := testpg.Start(t).Database(t)
	state, addrA, addrB := filepath.Join(t.TempDir(), "kbs"), freeAddr(t), freeAddr(t)
	a := x.startKBS(state, addrA, "--store", url, "--allow-sim")
	x.startKBS(state, addrB, "--store", url, "--allow-sim")
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	hc, err := client.HTTPClient(ca, &http.Transport{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := kbs.LoadAdminKey(filepath.Join(state, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{"https://" + addrA, "https://" + addrB}
	admin := func(i int) *client.Admin { return &client.Admin{URL: urls[i%2], HTTP: hc, Key: key} }
	ctx := context.Background()
	if err := admin(1).Put(ctx, "load/key/k", []byte("v0")); err != nil {
		t.Fatal(err)
	}
	// Each operation tries the replica its turn names, then the other.
	either := func(i int, op func(u string) error) error { return onReplicas(urls, i, 2, op) }
	var mu sync.Mutex
	put := map[string]bool{"v0": true}
	var acked []string
	var ops, fails atomic.Int64
	// One-shot versions, each asked for by two clients through the run:
	// none may be released twice, whichever replica serves or dies.
	const oneShots = 24
	for i := range oneShots {
		if err := admin(i).PutOneShot(ctx, fmt.Sprintf("load/once/o%d", i), []byte(fmt.Sprintf("once-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var released [oneShots]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r := (i + w*oneShots/2) % oneShots
				var got []byte
				err := either(i+w, func(u string) error {
					var err error
					got, err = (&client.Client{URL: u, HTTP: hc, Attester: simAttester{auth}}).Resource(ctx, "load", "once", fmt.Sprintf("o%d", r))
					return err
				})
				switch {
				case err == nil && string(got) == fmt.Sprintf("once-%d", r):
					released[r].Add(1)
				case err != nil && strings.Contains(err.Error(), "released already"):
				default:
					t.Errorf("one-shot o%d: %q %v", r, got, err)
				}
			}
		}()
	}
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 3 {
				select {
				case <-stop:
					return
				default:
				}
				var got []byte
				err := either(i, func(u string) error {
					var err error
					got, err = (&client.Client{URL: u, HTTP: hc, Attester: simAttester{auth}}).Resource(ctx, "load", "key", "k")
					return err
				})
				ops.Add(1)
				mu.Lock()
				ok := put[string(got)]
				mu.Unlock()
				if err != nil || !ok {
					if fails.Add(1) <= 3 {
						t.Errorf("release %d: %q %v", i, got, err)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := fmt.Sprintf("v%d", i)
			mu.Lock()
			put[v] = true // may be released as soon as it is stored
			mu.Unlock()
			// Sent again to the other replica when the first died, with
			// its Idempotency-Key: a put the dead replica committed
			// before its answer was lost is not stored twice.
			opt := client.PutOptions{RequestID: fmt.Sprintf("%s-put-%d", t.Name(), i)}
			if err := either(i, func(u string) error {
				_, err := (&client.Admin{URL: u, HTTP: hc, Key: key}).PutWith(ctx, "load/key/k", []byte(v), opt)
				return err
			}); err != nil {
				t.Errorf("put %s: %v", v, err)
				continue
			}
			mu.Lock()
			acked = append(acked, v)
			mu.Unlock()
		}
	}()
	// Load before the kill and after it, measured in operations done.
	until := func(releases, puts int) {
		deadline := time.Now().Add(90 * time.Second)
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if ops.Load() >= int64(releases) && n >= puts {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the load stalled: %d releases, %d puts", ops.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	until(15, 5)
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	until(int(ops.Load())+15, before+5)
	close(stop)
	wg.Wait()
	if ops.Load() < 10 || len(acked) < 5 {
		t.Fatalf("too little load to judge: %d releases, %d puts", ops.Load(), len(acked))
	}
	// Every acknowledged put is a version on the surviving replica.
	vs, err := admin(1).Versions(ctx, "load/key/k")
	if err != nil || len(vs) != len(acked)+1 {
		t.Fatalf("%d versions after %d acknowledged puts (+1): %v", len(vs), len(acked), err)
	}
	for i, v := range acked {
		got, err := admin(1).GetVersion(ctx, "load/key/k", i+2)
		if err != nil || string(got) != v {
			t.Errorf("acknowledged put %s: version %d is %q %v", v, i+2, got, err)
		}
	}
	spent := 0
	for i := range released {
		if n := released[i].Load(); n > 1 {
			t.Errorf("one-shot o%d was released %d times", i, n)
		} else {
			spent += int(n)
		}
	}
	if spent == 0 {
		t.Error("no one-shot version was released: the check judged nothing")
	}
	t.Logf("%d full protocols and %d puts across the kill; %d failed; %d of %d one-shot versions released once", ops.Load(), len(acked), fails.Load(), spent, oneShots)
}

// onReplicas runs op against urls[i], then, while a replica is gone (see
// isConnErr), the next ones in turn, at most tries times in all: what a
// client behind a load balancer sees when a replica dies or restarts.
func onReplicas(urls []string, i, tries int, op func(url string) error) error {
	var err error
	for try := 0; try < tries; try++ {
		if err = op(urls[(i+try)%len(urls)]); err == nil || !isConnErr(err) {
			return err
		}
	}
	return err
}

// isConnErr tells a replica that is gone (refused, reset, or a kept-alive
// connection closed as it stopped) from an answer.
func isConnErr(err error) bool {
	for _, e := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, e) {
			return true
		}
	}
	var netErr interface{ Timeout() bool }
	return errors.As(err, &netErr) && netErr.Timeout()
}
