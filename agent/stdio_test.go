package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/testimage"
)

// readUntil reads a container's or an exec's output until it holds want
// (or it ends), and returns it.
func readUntil(t *testing.T, cl agentv1.AgentService, container, execID, want string) string {
	t.Helper()
	ctx := context.Background()
	var all strings.Builder
	var off int64
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: container, ExecId: execID, Offset: off, WaitMs: 1000})
		if err != nil {
			t.Fatalf("read output of %s/%s: %v", container, execID, err)
		}
		all.Write(r.GetData())
		off = r.GetNextOffset()
		if strings.Contains(all.String(), want) || r.GetEof() {
			break
		}
	}
	if !strings.Contains(all.String(), want) {
		t.Fatalf("output of %s/%s is %q; want %q in it", container, execID, all.String(), want)
	}
	return all.String()
}

// TestInteractiveIO: a container's stdin, a detached exec on a terminal
// (input, window size, exit status) and a detached exec without one
// (separate streams, end of input).
func TestInteractiveIO(t *testing.T) {
	cl, ref := agentWithBusybox(t)
	ctx := context.Background()
	// A shell reading its commands from stdin (kubectl attach).
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: "sh", Image: ref, Command: []string{"sh"}, Stdin: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", Data: []byte("x")}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("stdin before start: %v, want FailedPrecondition", err)
	}
	if _, err := cl.StartContainer(ctx, &agentv1.StartContainerRequest{Container: "sh"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", Data: []byte("echo $((6*7))\n")}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, cl, "sh", "", "42\n")
	if _, err := cl.ResizeTerminal(ctx, &agentv1.ResizeTerminalRequest{Container: "sh", Width: 100, Height: 30}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("resize without a terminal: %v, want FailedPrecondition", err)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", Data: make([]byte, maxStdinWrite+1)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("oversized write: %v, want InvalidArgument", err)
	}

	// An exec on a terminal: the shell sees one, gets the window size and
	// reads what is typed.
	r, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "sh", Args: []string{"sh"}, Detach: true, Terminal: true, OpenStdin: true})
	if err != nil {
		t.Fatal(err)
	}
	id := r.GetExecId()
	if _, err := cl.ResizeTerminal(ctx, &agentv1.ResizeTerminalRequest{Container: "sh", ExecId: id, Width: 123, Height: 45}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ResizeTerminal(ctx, &agentv1.ResizeTerminalRequest{Container: "sh", ExecId: id, Width: 70000, Height: 45}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("resize to 70000 columns: %v, want InvalidArgument", err)
	}
	// runc relays input before it copies the window size to the terminal
	// it makes in the container (runc's own start-up order), so the first
	// command can see a 0x0 terminal: the shell asks again until the size
	// arrived (busybox's stty prints an error and exits 0 on a 0x0
	// terminal: the loop compares the size itself).
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", ExecId: id, Data: []byte("test -t 0 && echo on-a-tty; i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null); [ \"$s\" = \"45 123\" ] && break; i=$((i+1)); sleep 0.1; done; echo size=$s; exit 7\n")}); err != nil {
		t.Fatal(err)
	}
	out := readUntil(t, cl, "sh", id, "size=45 123")
	if !strings.Contains(out, "on-a-tty") {
		t.Errorf("terminal exec output %q: the shell is not on a terminal", out)
	}
	w, err := cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: "sh", ExecId: id, TimeoutMs: 10000})
	if err != nil || !w.GetExited() || w.GetExitCode() != 7 {
		t.Fatalf("wait for the terminal exec: %v %v, want exit 7", w, err)
	}
	if _, err := cl.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: "sh", ExecId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: "sh", ExecId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("output of a removed exec: %v, want NotFound", err)
	}

	// An exec without a terminal: stdout and stderr apart, EOF on close.
	r, err = cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "sh", Args: []string{"sh", "-c", "cat; echo err >&2"}, Detach: true, OpenStdin: true})
	if err != nil {
		t.Fatal(err)
	}
	id = r.GetExecId()
	if _, err := cl.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: "sh", ExecId: id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("remove a running exec: %v, want FailedPrecondition", err)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", ExecId: id, Data: []byte("typed\n"), Close: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", ExecId: id, Data: []byte("late")}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("write after close: %v, want FailedPrecondition", err)
	}
	w, err = cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: "sh", ExecId: id, TimeoutMs: 10000})
	if err != nil || !w.GetExited() || w.GetExitCode() != 0 {
		t.Fatalf("wait for the exec: %v %v", w, err)
	}
	var stdout, stderr string
	var off int64
	for {
		lr, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: "sh", ExecId: id, Offset: off, Streams: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range lr.GetChunks() {
			if ch.GetStream() == agentv1.LogStream_STDERR {
				stderr += string(ch.GetData())
			} else {
				stdout += string(ch.GetData())
			}
		}
		off = lr.GetNextOffset()
		if lr.GetEof() {
			break
		}
	}
	if stdout != "typed\n" || stderr != "err\n" {
		t.Errorf("exec streams: stdout %q stderr %q", stdout, stderr)
	}

	// A blocking exec takes neither a terminal nor an open stdin; a
	// detached one takes no stdin bytes.
	for _, req := range []*agentv1.ExecProcessRequest{
		{Container: "sh", Args: []string{"true"}, Terminal: true},
		{Container: "sh", Args: []string{"true"}, OpenStdin: true},
		{Container: "sh", Args: []string{"true"}, Detach: true, Stdin: []byte("x")},
	} {
		if _, err := cl.ExecProcess(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("exec %v: %v, want InvalidArgument", req, err)
		}
	}
	// Closing the container's stdin ends the shell.
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "sh", Close: true}); err != nil {
		t.Fatal(err)
	}
	w, err = cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: "sh", TimeoutMs: 10000})
	if err != nil || !w.GetExited() {
		t.Fatalf("the shell did not end at the end of its input: %v %v", w, err)
	}
}

// TestTerminalContainer: a container on a terminal (tty: true) writes one
// stream, takes a window size and hangs up when its stdin closes.
func TestTerminalContainer(t *testing.T) {
	cl, ref := agentWithBusybox(t)
	ctx := context.Background()
	// A program reading its terminal in canonical mode, as most do (an
	// interactive shell's line editor would also answer cursor queries).
	// runc relays input and window-size changes from separate goroutines,
	// so the size can land after the line: the program looks again until
	// it has.
	spec := &agentv1.ContainerSpec{Name: "tty", Image: ref, Stdin: true, Tty: true,
		Command: []string{"sh", "-c", "read line; test -t 1 && echo tty-out; for i in $(seq 50); do s=$(stty size 2>/dev/null); [ \"$s\" = '33 99' ] && break; sleep 0.2; done; echo $s; echo got-$line >&2; exec cat"}}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartContainer(ctx, &agentv1.StartContainerRequest{Container: "tty"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ResizeTerminal(ctx, &agentv1.ResizeTerminalRequest{Container: "tty", Width: 99, Height: 33}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "tty", Data: []byte("go\n")}); err != nil {
		t.Fatal(err)
	}
	out := readUntil(t, cl, "tty", "", "got-go")
	if !strings.Contains(out, "tty-out") || !strings.Contains(out, "33 99") {
		t.Errorf("terminal container output %q", out)
	}
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "tty", Close: true}); err != nil {
		t.Fatal(err)
	}
	w, err := cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: "tty", TimeoutMs: 10000})
	if err != nil || !w.GetExited() {
		t.Fatalf("the shell did not end when its terminal hung up: %v %v", w, err)
	}
}

// agentWithBusybox starts an agent under testEnforcer with a sandbox
// created and busybox pulled; it returns the client and the image.
func agentWithBusybox(t *testing.T) (agentv1.AgentService, string) {
	t.Helper()
	needRunc(t)
	reg := testimage.NewRegistry()
	t.Cleanup(reg.Close)
	img, err := testimage.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	_, ref, err := reg.Push("bb:v1", img)
	if err != nil {
		t.Fatal(err)
	}
	_, cl := startAgent(t, testEnforcer{})
	ctx := context.Background()
	if _, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PullImage(ctx, &agentv1.PullImageRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	return cl, ref
}
