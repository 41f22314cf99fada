package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/console"
)

// lockedBuffer is a bytes.Buffer a command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// interactive runs crictl with a stdin the test writes and an output it
// watches.
type interactive struct {
	cmd       *exec.Cmd
	in        io.WriteCloser
	out, errs *lockedBuffer
	done      chan error
}

// interactive starts crictl with args; on a terminal of the given size
// (as a user's), or with pipes when cols is 0.
func (c *cri) interactive(t *testing.T, cols, rows uint16, args ...string) *interactive {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	x := &interactive{cmd: c.CrictlCmd(ctx, args...), out: &lockedBuffer{}, errs: &lockedBuffer{}, done: make(chan error, 1)}
	if cols > 0 {
		m, slavePath, err := console.NewPty()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if err := m.Resize(console.WinSize{Width: cols, Height: rows}); err != nil {
			t.Fatal(err)
		}
		slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		x.cmd.Stdin, x.cmd.Stdout, x.cmd.Stderr = slave, slave, x.errs
		if err := x.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		slave.Close()
		x.in = m
		go func() { _, _ = io.Copy(x.out, m) }()
		go func() { x.done <- x.cmd.Wait() }()
		return x
	}
	in, err := x.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	x.in = in
	x.cmd.Stdout, x.cmd.Stderr = x.out, x.errs
	if err := x.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { x.done <- x.cmd.Wait() }()
	t.Cleanup(func() { in.Close() })
	return x
}

// expect waits until the output holds want.
func (x *interactive) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(x.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("crictl %v: output %q has no %q (stderr %q)", x.cmd.Args[7:], x.out.String(), want, x.errs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCRIInteractive: kubectl exec -it and kubectl attach as crictl does
// them, through a generated policy that pins the container's stdin and
// allows the interactive shell: a terminal exec reads what is typed and
// reports its exit status; attach writes to the container's stdin and reads
// its output; an interactive exec the policy does not allow is refused.
func TestCRIInteractive(t *testing.T) {
	c := needCRI(t)
	settings := filepath.Join(t.TempDir(), "settings.json")
	if err := os.WriteFile(settings, []byte(`{"exec": [["/bin/sh"]], "exec_stdin": true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := criPodYAML("cri-tty", `  containers:
  - name: shell
    image: `+env.pinned+`
    command: ["/bin/sh"]
    stdin: true
`)
	p := newCRIPod(t, "cri-tty", yaml, map[string]map[string]any{
		"shell": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh"}, "stdin": true},
	}, "--settings", settings)
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "shell")
	c.waitState(t, ctr, "CONTAINER_RUNNING", 30*time.Second)

	// kubectl exec -it: a shell on a terminal, of the user's terminal's
	// size.
	x := c.interactive(t, 101, 37, "exec", "-it", ctr, "/bin/sh")
	if _, err := io.WriteString(x.in, "test -t 0 && echo on-a-tty-$((6*7))\n"); err != nil {
		t.Fatal(err)
	}
	x.expect(t, "on-a-tty-42")
	// The terminal's size travels apart from its input (crictl, like
	// kubectl, sends it as a resize after the exec starts), so the shell
	// may read a line before it lands: ask again until it has.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(x.out.String(), "size-37x101") {
		if time.Now().After(deadline) {
			t.Fatalf("crictl exec -it: the terminal never got the size 37x101; output %q", x.out.String())
		}
		if _, err := io.WriteString(x.in, "echo size-$(stty size | tr ' ' x)\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if _, err := io.WriteString(x.in, "exit 3\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-x.done:
		if !strings.Contains(x.errs.String(), "exit code 3") {
			t.Errorf("crictl exec -it: %v, stderr %q; want exit code 3", err, x.errs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("crictl exec -it did not end when the shell exited")
	}

	// kubectl attach: the container's own shell reads its stdin.
	a := c.interactive(t, 0, 0, "attach", "-i", ctr)
	deadline = time.Now().Add(time.Minute)
	for {
		// The attach may not be wired yet when the first line goes:
		// retry until the shell answers.
		if _, err := io.WriteString(a.in, "echo attached-$((6*7))\n"); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(a.out.String(), "attached-42") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attach: no answer from the shell; output %q, stderr %q", a.out.String(), a.errs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	a.in.Close()
	_ = a.cmd.Process.Kill()

	// An interactive exec of a command the policy does not allow runs
	// nothing.
	out, errs, code := c.crictl("exec", "-i", ctr, "/bin/sh", "-c", "echo pwned")
	if code == 0 || strings.Contains(out, "pwned") || !strings.Contains(errs, "exec refused") {
		t.Fatalf("exec not in the policy: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestCRISeccomp: a pod's RuntimeDefault seccomp profile, as containerd
// resolves it, matches the digest the generator pinned, and the container
// runs filtered; the same container without the profile is refused, naming
// both digests.
func TestCRISeccomp(t *testing.T) {
	c := needCRI(t)
	cmd := "grep Seccomp: /proc/self/status; exec sleep 1000"
	yaml := criPodYAML("cri-seccomp", `  securityContext:
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: main
    image: `+env.pinned+`
    command: ["/bin/sh", "-c", "`+cmd+`"]
`)
	filtered := map[string]any{"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd},
		"linux": map[string]any{"security_context": map[string]any{"seccomp": map[string]any{"profile_type": 0},
			"namespace_options": map[string]any{"pid": 1}}}}
	p := newCRIPod(t, "cri-seccomp", yaml, map[string]map[string]any{"main": filtered})
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "main")
	c.waitLogs(t, ctr, 30*time.Second, func(out string) bool { return strings.Contains(out, "Seccomp:\t2") })
	c.must(t, "stop", "--timeout", "2", ctr)
	c.must(t, "rm", ctr)

	// The host drops the profile: refused, and nothing runs.
	bare := newCRIPod(t, "cri-seccomp", yaml, map[string]map[string]any{
		"main": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd}},
	})
	id := c.must(t, "create", "--with-pull", podID, bare.containers["main"], p.podConfig)
	_, errs, code := c.crictl("start", id)
	if code == 0 || !strings.Contains(errs, `seccomp = \"\", policy allows \"sha256:`) {
		t.Fatalf("a container without its pinned seccomp profile: exit %d\n%s", code, errs)
	}
}
