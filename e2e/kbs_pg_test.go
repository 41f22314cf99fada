package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/testpg"
	"cocoon.dev/cocoon/kbs/client"
	"cocoon.dev/cocoon/tee/sim"
)

// TestKBSReplicasOnPostgres: two `cocoon kbs serve` replicas on one real
// PostgreSQL (--store postgres://...): puts acknowledged by one, which is
// then killed with SIGKILL, are all served by the other, to its admin API
// and to a pod that attests to it; a dump of the database holds no
// plaintext, and restored elsewhere it serves every value.
func TestKBSReplicasOnPostgres(t *testing.T) {
	x := newH(t)
	pg := testpg.Start(t)
	url := pg.Database(t)
	state, addrA, addrB := filepath.Join(t.TempDir(), "kbs"), freeAddr(t), freeAddr(t)
	a := x.startKBS(state, addrA, "--store", url, "--allow-sim")
	x.startKBS(state, addrB, "--store", url, "--allow-sim")
	f := filepath.Join(t.TempDir(), "v")
	const n = 20
	for i := 0; i < n; i++ {
		os.WriteFile(f, []byte(fmt.Sprintf("value-%d", i)), 0o600)
		x.mustRun(0, "kbs", "put", fmt.Sprintf("kbs:///rep/k/v%d", i), f, "--state", state) // to A, the state's URL
	}
	// A put with a request id, acknowledged by A; sent again to B after
	// A's death (as an admin whose answer was lost would): stored once.
	os.WriteFile(f, []byte("join-token"), 0o600)
	if out, _ := x.mustRun(0, "kbs", "put", "kbs:///rep/k/join", f, "--one-shot", "--request-id", "join-1", "--state", state); out != "stored kbs:///rep/k/join version 1\n" {
		t.Errorf("put with a request id: %q", out)
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	onB := []string{"--kbs", "https://" + addrB, "--admin-key", filepath.Join(state, "admin.key"), "--ca", filepath.Join(state, "ca.pem")}
	if out, _ := x.mustRun(0, append([]string{"kbs", "put", "kbs:///rep/k/join", f, "--one-shot", "--request-id", "join-1", "-o", "json"}, onB...)...); !strings.Contains(out, `"replayed": true`) || !strings.Contains(out, `"version": 1`) {
		t.Errorf("the put sent again to B: %q", out)
	}
	if out, _ := x.mustRun(0, append([]string{"kbs", "versions", "kbs:///rep/k/join"}, onB...)...); strings.Count(out, "\n") != 1 {
		t.Errorf("versions after the put was sent again: %q", out)
	}
	for i := 0; i < n; i++ {
		out, _ := x.mustRun(0, append([]string{"kbs", "get", fmt.Sprintf("kbs:///rep/k/v%d", i)}, onB...)...)
		if out != fmt.Sprintf("value-%d", i) {
			t.Errorf("v%d from B after A was killed: %q", i, out)
		}
	}
	// A second version of v7 through B, then disabled: versions, as the
	// CLI lists them, are shared too, and the newest enabled one is what
	// a release takes.
	os.WriteFile(f, []byte("value-7-rotated"), 0o600)
	x.mustRun(0, append([]string{"kbs", "put", "kbs:///rep/k/v7", f}, onB...)...)
	if out, _ := x.mustRun(0, append([]string{"kbs", "versions", "kbs:///rep/k/v7"}, onB...)...); out != "1\tenabled\n2\tenabled\n" {
		t.Errorf("versions: %q", out)
	}
	x.mustRun(0, append([]string{"kbs", "disable", "kbs:///rep/k/v7", "--version", "2"}, onB...)...)
	if out, _ := x.mustRun(0, append([]string{"kbs", "get", "kbs:///rep/k/v7", "--version", "1"}, onB...)...); out != "value-7" {
		t.Errorf("version 1: %q", out)
	}
	// A pod attests to B and gets a resource A stored (version 2 disabled).
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	p := x.pod(secretPod("rep", env.busybox, base64.StdEncoding.EncodeToString(ca), addrB, "echo secret=$(wget -qO- http://127.0.0.1:8006/cdh/resource/rep/k/v7)"))
	x.mustRun(0, "policy", "generate", p)
	if out, errs := x.mustRun(0, "run", p); !strings.Contains(out, "secret=value-7") {
		t.Fatalf("pod via B: stdout %q stderr %q", out, errs)
	}
	// The replicas' one audit log: A's puts and B's release, through B.
	if out, _ := x.mustRun(0, append([]string{"kbs", "audit", "-n", "500"}, onB...)...); !strings.Contains(out, `"event":"admin_put"`) || !strings.Contains(out, `"verdict":"released"`) || strings.Contains(out, "value-7") {
		t.Errorf("kbs audit:\n%s", out)
	}
	// A dump of the whole database (resources, sessions, the audit log,
	// the policy) holds no value; restored into another database, it
	// serves a replica that reads every value.
	ctx := context.Background()
	dump, err := testpg.Tool(ctx, "pg_dump", "--format=plain", url)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(dump, []byte("kbs_resources")) || !bytes.Contains(dump, []byte("rep/k/v7")) {
		t.Fatalf("the dump does not hold the resources: %d bytes", len(dump))
	}
	if bytes.Contains(dump, []byte("value-")) {
		t.Fatal("the database dump holds a secret in plaintext")
	}
	archive := filepath.Join(t.TempDir(), "kbs.dump")
	if _, err := testpg.Tool(ctx, "pg_dump", "--format=custom", "--file="+archive, url); err != nil {
		t.Fatal(err)
	}
	restored := pg.Database(t)
	if _, err := testpg.Tool(ctx, "pg_restore", "--dbname="+restored, archive); err != nil {
		t.Fatal(err)
	}
	addrC := freeAddr(t)
	x.startKBS(state, addrC, "--store", restored)
	onC := []string{"--kbs", "https://" + addrC, "--admin-key", filepath.Join(state, "admin.key"), "--ca", filepath.Join(state, "ca.pem")}
	for _, i := range []int{0, 13} {
		if out, _ := x.mustRun(0, append([]string{"kbs", "get", fmt.Sprintf("kbs:///rep/k/v%d", i)}, onC...)...); out != fmt.Sprintf("value-%d", i) {
			t.Errorf("v%d from the restored database: %q", i, out)
		}
	}
}

// TestKBSMasterKeyRotation: the three steps of a master-key rotation with
// two replicas on PostgreSQL under load: workloads run the full protocol
// throughout, against either replica, while after each step the replicas
// restart one at a time (one always serves). Every fetch before, during
// and after gets the right plaintext, and fetches happen in every phase;
// the reseal reports what it sealed again; after --finish the old key is
// gone and every value still opens.
func TestKBSMasterKeyRotation(t *testing.T) {
	x := newH(t)
	auth, err := sim.LoadOrCreate(filepath.Join(x.root, "sim"))
	if err != nil {
		t.Fatal(err)
	}
	url := testpg.Start(t).Database(t)
	state := filepath.Join(t.TempDir(), "kbs")
	addrs := []string{freeAddr(t), freeAddr(t)}
	procs := make([]*kbsProc, 2)
	for i := range procs {
		procs[i] = x.startKBS(state, addrs[i], "--store", url, "--allow-sim")
	}
	// restart stops and starts the replicas one at a time.
	restart := func() {
		for i, p := range procs {
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.cmd.Wait()
			procs[i] = x.startKBS(state, addrs[i], "--store", url, "--allow-sim")
		}
	}
	f := filepath.Join(t.TempDir(), "v")
	for i := 0; i < 5; i++ {
		os.WriteFile(f, []byte(fmt.Sprintf("value-%d", i)), 0o600)
		x.mustRun(0, "kbs", "put", fmt.Sprintf("kbs:///rot/k/v%d", i), f, "--state", state)
	}
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	hc, err := client.HTTPClient(ca, &http.Transport{})
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{"https://" + addrs[0], "https://" + addrs[1]}
	var mu sync.Mutex
	phase, fetched, wrong := "before", map[string]int{}, 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 2 {
				select {
				case <-stop:
					return
				default:
				}
				k := i % 5
				// A replica restarting refuses connections (or drops a
				// kept-alive one): start again on the other.
				var got []byte
				err := onReplicas(urls, i, 6, func(u string) error {
					var err error
					got, err = (&client.Client{URL: u, HTTP: hc, Attester: simAttester{auth}}).Resource(context.Background(), "rot", "k", fmt.Sprintf("v%d", k))
					return err
				})
				mu.Lock()
				if err != nil || string(got) != fmt.Sprintf("value-%d", k) {
					if wrong++; wrong <= 3 {
						t.Errorf("%s: v%d = %q %v", phase, k, got, err)
					}
				} else {
					fetched[phase]++
				}
				mu.Unlock()
			}
		}()
	}
	// during waits for n more good fetches in the current phase, then
	// names the next.
	during := func(next string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			mu.Lock()
			n := fetched[phase]
			mu.Unlock()
			if n >= 10 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d fetches in a minute", phase, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		phase = next
		mu.Unlock()
	}
	onB := []string{"--kbs", "https://" + addrs[1], "--admin-key", filepath.Join(state, "admin.key"), "--ca", filepath.Join(state, "ca.pem")}
	old, _ := os.ReadFile(filepath.Join(state, "master.key"))
	during("prepare")
	x.mustRun(0, "kbs", "rotate-master", "--state", state, "--prepare")
	restart()
	during("commit")
	x.mustRun(0, "kbs", "rotate-master", "--state", state, "--commit")
	restart()
	during("reseal")
	out, _ := x.mustRun(0, append([]string{"kbs", "reseal"}, onB...)...)
	if !strings.Contains(out, "resealed 5 of 5") || !strings.Contains(out, "1 admin key MACs") {
		t.Fatalf("reseal: %q", out)
	}
	if out, _ := x.mustRun(0, append([]string{"kbs", "reseal"}, onB...)...); !strings.Contains(out, "resealed 0 of 5") {
		t.Fatalf("second reseal: %q", out)
	}
	during("finish")
	x.mustRun(0, "kbs", "rotate-master", "--state", state, "--finish")
	restart()
	during("after")
	during("done")
	close(stop)
	wg.Wait()
	t.Logf("good fetches per phase: %v; wrong: %d", fetched, wrong)
	if now, _ := os.ReadFile(filepath.Join(state, "master.key")); bytes.Equal(now, old) {
		t.Fatal("the master key did not change")
	}
	if _, err := os.Stat(filepath.Join(state, "master.key.old")); !os.IsNotExist(err) {
		t.Fatalf("master.key.old after --finish: %v", err)
	}
	_, errs := x.mustRun(1, "kbs", "rotate-master", "--state", state, "--commit")
	if !strings.Contains(errs, "--prepare first") {
		t.Errorf("commit without prepare: %s", errs)
	}
}

// TestKBSAdminKeysCLI: a second admin with a key of their own, on two
// replicas sharing PostgreSQL: generated, added through A, used on B,
// removed, refused; the first key retired; the last key kept.
func TestKBSAdminKeysCLI(t *testing.T) {
	x := newH(t)
	url := testpg.Start(t).Database(t)
	state, addrA, addrB := filepath.Join(t.TempDir(), "kbs"), freeAddr(t), freeAddr(t)
	x.startKBS(state, addrA, "--store", url)
	x.startKBS(state, addrB, "--store", url)
	alice := filepath.Join(t.TempDir(), "alice.key")
	x.mustRun(0, "kbs", "admin-key", "generate", alice)
	on := func(addr, key string) []string {
		return []string{"--kbs", "https://" + addr, "--admin-key", key, "--ca", filepath.Join(state, "ca.pem")}
	}
	f := filepath.Join(t.TempDir(), "v")
	os.WriteFile(f, []byte("by-alice"), 0o600)
	_, errs := x.mustRun(1, append([]string{"kbs", "put", "kbs:///app/key/a", f}, on(addrB, alice)...)...)
	if !strings.Contains(errs, "not signed by an admin key") {
		t.Fatalf("alice before she was added: %s", errs)
	}
	x.mustRun(0, "kbs", "admin-key", "add", "alice", alice+".pub", "--state", state)
	x.mustRun(0, append([]string{"kbs", "put", "kbs:///app/key/a", f}, on(addrB, alice)...)...)
	out, _ := x.mustRun(0, "-o", "json", "kbs", "admin-key", "list", "--state", state)
	var keys []struct{ Name string }
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) != 2 || keys[0].Name != "admin" || keys[1].Name != "alice" {
		t.Fatalf("list: %s %v", out, err)
	}
	// Alice retires the initial key; the state directory's key is then
	// refused, alice's still works, and the last key stays.
	x.mustRun(0, append([]string{"kbs", "admin-key", "rm", "admin"}, on(addrA, alice)...)...)
	if _, errs := x.mustRun(1, "kbs", "ls", "--state", state); !strings.Contains(errs, "AdminAuthAccess") {
		t.Fatalf("the retired key: %s", errs)
	}
	if _, errs := x.mustRun(1, append([]string{"kbs", "admin-key", "rm", "alice"}, on(addrB, alice)...)...); !strings.Contains(errs, "last admin key") {
		t.Fatalf("removing the last key: %s", errs)
	}
	if out, _ := x.mustRun(0, append([]string{"kbs", "get", "kbs:///app/key/a"}, on(addrA, alice)...)...); out != "by-alice" {
		t.Fatalf("get: %q", out)
	}
}
