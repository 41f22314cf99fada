// Package testpg starts a real PostgreSQL server (Debian's postgresql
// package) for one test or benchmark: a cluster of its own in a temporary
// directory, run as an unprivileged user, reached on a Unix socket only,
// and stopped and removed when the test ends.
package testpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a running cluster.
type Server struct {
	dir, sock string
	cmd       *exec.Cmd
	exited    chan error
}

// ErrMissing is Run's answer on a machine without PostgreSQL.
var ErrMissing = errors.New("PostgreSQL is missing (Debian package postgresql; scripts/deps.sh --test installs it)")

// Start runs PostgreSQL for t. Without PostgreSQL the test is skipped,
// except under CI, where it fails.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := Run()
	if errors.Is(err, ErrMissing) && os.Getenv("CI") == "" {
		t.Skip("needs PostgreSQL (Debian package postgresql)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Run starts a cluster; Stop ends it.
func Run() (*Server, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return nil, ErrMissing
	}
	sort.Strings(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	cred, err := unprivileged()
	if err != nil {
		return nil, err
	}
	// Its own directory, which the unprivileged user owns (a test's
	// TempDir is root's, 0700).
	dir, err := os.MkdirTemp("", "cocoon-testpg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, sock: filepath.Join(dir, "sock"), exited: make(chan error, 1)}
	if err := s.start(bin, cred); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(bin string, cred *syscall.Credential) error {
	if err := os.Chmod(s.dir, 0o755); err != nil {
		return err
	}
	data := filepath.Join(s.dir, "data")
	for _, d := range []string{data, s.sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
		if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		c.Dir = s.dir
		c.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
		return c
	}
	if out, err := run("initdb", "-D", data, "-U", "cocoon", "--auth=trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	logPath := filepath.Join(s.dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	s.cmd = run("postgres", "-D", data, "-k", s.sock, "-c", "listen_addresses=", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return fmt.Errorf("start postgres: %w", err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	// Ready once the socket accepts a connection that can query.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", filepath.Join(s.sock, ".s.PGSQL.5432")); err == nil {
			c.Close()
			if conn, err := pgx.Connect(context.Background(), s.url("postgres")); err == nil {
				conn.Close(context.Background())
				return nil
			}
		}
		select {
		case err := <-s.exited:
			s.exited <- err
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres exited: %v\n%s", err, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("postgres did not accept connections within 30 s\n%s", log)
		}
	}
}

// Stop ends the server (a fast shutdown) and removes its directory.
func (s *Server) Stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		s.cmd = nil
	}
	os.RemoveAll(s.dir)
}

// unprivileged is the user the server runs as: PostgreSQL refuses root.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("no unprivileged user (postgres or nobody) to run PostgreSQL as")
}

func (s *Server) url(db string) string {
	return fmt.Sprintf("postgres://cocoon@/%s?host=%s&sslmode=disable", db, s.sock)
}

// Database creates a fresh database for t and returns its connection URL.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	u, err := s.NewDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// NewDatabase creates a fresh database and returns its connection URL.
func (s *Server) NewDatabase(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, s.url("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("t%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	return s.url(name), nil
}

// Tool runs one of the server's client programs (pg_dump, pg_restore,
// ...) with args and returns its standard output.
func Tool(ctx context.Context, name string, args ...string) ([]byte, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(bins) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrMissing)
	}
	sort.Strings(bins)
	cmd := exec.CommandContext(ctx, bins[len(bins)-1], args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	return out, nil
}
