// Package testpg starts a real PostgreSQL server (Debian's postgresql
// package) for one test: a cluster of its own in a temporary directory, run
// as an unprivileged user, reached on a Unix socket only, and stopped and
// removed when the test ends.
package testpg

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running test cluster.
type Server struct {
	dir, sock string
	cmd       *exec.Cmd
	exited    chan error
}

// Start runs PostgreSQL for t. Without PostgreSQL the test is skipped,
// except under CI, where it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL is missing (Debian package postgresql; scripts/deps.sh --test installs it)")
		}
		t.Skip("needs PostgreSQL (Debian package postgresql)")
	}
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	cred := unprivileged(t)
	// Its own directory, which the unprivileged user owns (a test's
	// TempDir is root's, 0700).
	dir, err := os.MkdirTemp("", "cocoon-testpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		c.Dir = dir
		c.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
		return c
	}
	if out, err := run("initdb", "-D", data, "-U", "cocoon", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s := &Server{dir: dir, sock: sock, exited: make(chan error, 1)}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = run("postgres", "-D", data, "-k", sock, "-c", "listen_addresses=", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		// SIGINT: a fast shutdown.
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
	// Ready once the socket accepts a connection that can query.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", filepath.Join(sock, ".s.PGSQL.5432")); err == nil {
			c.Close()
			if conn, err := pgx.Connect(context.Background(), s.url("postgres")); err == nil {
				conn.Close(context.Background())
				break
			}
		}
		select {
		case err := <-s.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres exited: %v\n%s", err, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres did not accept connections within 30 s\n%s", log)
		}
	}
	return s
}

// unprivileged is the user the server runs as: PostgreSQL refuses root.
func unprivileged(t testing.TB) *syscall.Credential {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	t.Fatal("no unprivileged user (postgres or nobody) to run PostgreSQL as")
	return nil
}

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://cocoon@/%s?host=%s&sslmode=disable", db, s.sock)
}

// Database creates a fresh database and returns its connection URL.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("t%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return s.url(name)
}
