package sandbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cocoon.dev/cocoon/agent"
)

// TestEgressChannel: a client using the agent's egress transport reaches a
// server on the host's loopback through the shim's CONNECT proxy.
func TestEgressChannel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hi %s", r.URL.Path)
	}))
	defer srv.Close()
	sock := filepath.Join(t.TempDir(), "egress.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	p := serveEgress(context.Background(), l, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer p.close()
	c := &http.Client{Transport: agent.EgressTransport(sock), Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(srv.URL + "/x")
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "hi /x" {
				t.Errorf("body %q", b)
			}
		}()
	}
	wg.Wait()
	// A refused connection is reported, not hung.
	_, err = c.Get("http://127.0.0.1:1/")
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("closed port: %v", err)
	}
}

func TestLoadDetectsGoneShim(t *testing.T) {
	root := Root(t.TempDir())
	dir := root.Dir("p")
	os.MkdirAll(dir, 0o700)
	// A pid that is surely not running: beyond pid_max.
	writeJSONAtomic(filepath.Join(dir, fileStatus), Status{Name: "p", Phase: PhaseRunning, ShimPID: 1 << 30})
	st, err := root.Load("p")
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseUnknown || !strings.Contains(st.Message, "runtime process") {
		t.Errorf("status %+v", st)
	}
	if _, err := root.Load("nope"); err == nil || !strings.Contains(err.Error(), "no such sandbox") {
		t.Errorf("missing sandbox: %v", err)
	}
	list, err := root.List()
	if err != nil || len(list) != 1 {
		t.Errorf("list %v %v", list, err)
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	root := Root(t.TempDir())
	_, err := Create(context.Background(), Options{Root: root, PodYAML: []byte("kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b, lifecycle: {preStop: {exec: {command: [sh]}}}}]}"), AgentBinary: "/bin/true", ShimCommand: []string{"/bin/false"}})
	if err == nil || !strings.Contains(err.Error(), "spec.containers[0].lifecycle is not supported") {
		t.Errorf("got %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(string(root), "sandboxes")); len(ents) != 0 {
		t.Errorf("sandbox created for a bad pod: %v", ents)
	}
	// A shim that dies at once is reported and leaves nothing behind.
	_, err = Create(context.Background(), Options{Root: root, PodYAML: []byte("kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b}]}"), AgentBinary: "/bin/true", ShimCommand: []string{"/bin/false"}})
	if err == nil || !strings.Contains(err.Error(), "runtime process exited early") {
		t.Errorf("got %v", err)
	}
	if _, err := os.Stat(root.Dir("p")); !os.IsNotExist(err) {
		t.Errorf("directory left: %v", err)
	}
}
