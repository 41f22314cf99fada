package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestIdentitySurvivesPIDReuse: a recorded identity signals its own process
// and nothing else — not a process that has the same PID with another start
// time, not one from another boot, not a zombie.
func TestIdentitySurvivesPIDReuse(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	id, err := Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Alive() {
		t.Fatal("a running process is not alive")
	}
	// The same PID with another start time: another process.
	reused := id
	reused.Start++
	if reused.Alive() {
		t.Error("a process with another start time counts as the recorded one")
	}
	if err := reused.Signal(unix.SIGKILL); !errors.Is(err, ErrGone) {
		t.Errorf("signal to a reused PID: %v, want ErrGone", err)
	}
	other := id
	other.Boot = "00000000-0000-0000-0000-000000000000"
	if err := other.Signal(unix.SIGKILL); !errors.Is(err, ErrGone) {
		t.Errorf("signal across a reboot: %v, want ErrGone", err)
	}
	if err := (Identity{PID: id.PID}).Signal(unix.SIGKILL); !errors.Is(err, ErrGone) {
		t.Errorf("signal to a bare PID: %v, want ErrGone", err)
	}
	// Nothing above reached it.
	if !id.Alive() {
		t.Fatal("a refused signal reached the process")
	}
	if err := id.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if id.Alive() {
		t.Error("an exited process is alive")
	}
	if err := id.Signal(unix.SIGTERM); !errors.Is(err, ErrGone) {
		t.Errorf("signal after exit: %v", err)
	}
	self, err := Of(os.Getpid())
	if err != nil || !self.Alive() {
		t.Errorf("self: %v %v", self, err)
	}
}

// TestZombieIsNotAlive: a child that exited but was not reaped is gone.
func TestZombieIsNotAlive(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := Of(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for it to become a zombie without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if id.Alive() {
		t.Error("a zombie is alive")
	}
	cmd.Wait()
}

// TestPinnedChildOutlivesItsThread: a child with Pdeathsig started by
// StartPinned survives while goroutines that locked and abandoned their
// threads are retired by the runtime (the golang/go#27505 hazard), and its
// Wait reports its exit.
func TestPinnedChildOutlivesItsThread(t *testing.T) {
	// The hazard itself: started from a thread that then exits, the child
	// is killed at once although its parent process lives on. (A locked
	// goroutine that exits on the main thread wedges it instead of ending
	// it, so try a few times.)
	killed := false
	for try := 0; try < 3 && !killed; try++ {
		bad := exec.Command("sleep", "30")
		bad.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		started := make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			started <- bad.Start()
		}()
		if err := <-started; err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- bad.Wait() }()
		select {
		case err := <-exited:
			killed = err != nil && strings.Contains(err.Error(), "killed")
		case <-time.After(2 * time.Second):
			bad.Process.Kill()
			<-exited
		}
	}
	if !killed {
		t.Fatal("the hazard did not show: a child started from an exiting thread lived on")
	}

	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c, err := StartPinned(cmd)
	if err != nil {
		t.Fatal(err)
	}
	// Goroutines that exit while locked make the runtime end their
	// threads; none of them is the child's.
	for i := 0; i < 50; i++ {
		done := make(chan struct{})
		go func() { runtime.LockOSThread(); close(done) }()
		<-done
	}
	select {
	case <-c.Done():
		t.Fatalf("the child died: %v", c.Wait())
	default:
	}
	cmd.Process.Kill()
	if err := c.Wait(); err == nil {
		t.Error("Wait of a killed child reported success")
	}
}

// TestStartPinnedInJoinsNetNS starts a child in another process's network
// namespace and checks that the child, and only the child, is in it.
func TestStartPinnedInJoinsNetNS(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	holder := exec.Command("sleep", "60")
	holder.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	nsPath := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	want, err := os.Readlink(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	if self == want {
		t.Fatal("setup: the holder shares our network namespace")
	}
	var out bytes.Buffer
	cmd := exec.Command("readlink", "/proc/self/ns/net")
	cmd.Stdout = &out
	c, err := StartPinnedIn(cmd, nsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != want {
		t.Errorf("child in %s, want %s", got, want)
	}
	if now, _ := os.Readlink("/proc/self/ns/net"); now != self {
		t.Errorf("the test process moved to %s", now)
	}
	if _, err := StartPinnedIn(exec.Command("true"), "/nonexistent/ns"); err == nil {
		t.Error("a missing namespace was accepted")
	}
}
