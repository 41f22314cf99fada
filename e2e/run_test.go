package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/proc"
	"cocoon.dev/cocoon/sandbox"
)

func simplePod(name, image, restart string, command string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  restartPolicy: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: %s
    command: ["sh", "-c", %q]
`, name, restart, image, command)
}

func TestRunExitCodeAndOutput(t *testing.T) {
	x := newH(t)
	p := x.pod(simplePod("exit", env.busybox, "Never", "echo to-stdout; echo to-stderr >&2; exit 3"))
	out, _ := x.mustRun(3, "run", p)
	if !strings.Contains(out, "to-stdout") || !strings.Contains(out, "to-stderr") {
		t.Errorf("output %q", out)
	}
	// The sandbox stays until rm, with the logs.
	logs, _ := x.mustRun(0, "logs", "exit")
	if !strings.Contains(logs, "to-stdout") {
		t.Errorf("logs %q", logs)
	}
	ps, _ := x.mustRun(0, "ps", "-o", "json")
	var list []sandbox.Status
	if err := json.Unmarshal([]byte(ps), &list); err != nil || len(list) != 1 {
		t.Fatalf("ps: %v %s", err, ps)
	}
	if list[0].Phase != sandbox.PhaseFailed || list[0].ExitCode != 3 || list[0].Containers[0].Digest == "" {
		t.Errorf("status %+v", list[0])
	}
	x.mustRun(0, "rm", "exit")
	if _, err := os.Stat(filepath.Join(x.root, "sandboxes", "exit")); !os.IsNotExist(err) {
		t.Errorf("sandbox directory left after rm: %v", err)
	}
	if n := mountsUnder(x.root); n != 0 {
		t.Errorf("%d mounts left under %s", n, x.root)
	}
	// Success exits 0; --rm removes the sandbox.
	x.mustRun(0, "run", "--rm", x.pod(simplePod("ok", env.busybox, "Never", "true")))
	if _, err := os.Stat(filepath.Join(x.root, "sandboxes", "ok")); !os.IsNotExist(err) {
		t.Errorf("--rm left the sandbox: %v", err)
	}
}

func TestEnvAndArgs(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: envargs}
spec:
  restartPolicy: Never
  containers:
  - name: cmd-from-image
    image: %[1]s
  - name: args-replace-cmd
    image: %[1]s
    args: ["sh", "-c", "echo image-cmd-replaced IMAGE_VAR=$IMAGE_VAR"]
  - name: spec-env
    image: %[1]s
    env:
    - {name: IMAGE_VAR, value: overridden}
    - {name: WHO, value: world}
    - {name: GREETING, value: "hello $(WHO)"}
    command: ["sh", "-c", "echo $GREETING IMAGE_VAR=$IMAGE_VAR HOSTNAME=$HOSTNAME; echo args: \"$0\" \"$1\"", "$(WHO)", "$$(WHO)"]
    workingDir: /tmp
  - name: user
    image: %[1]s
    securityContext: {runAsUser: 1000}
    command: ["sh", "-c", "echo uid=$(id -u) pwd=$(pwd)"]
    workingDir: /tmp
`, env.pinned))
	out, errs := x.mustRun(0, "run", p)
	for _, want := range []string{
		"[args-replace-cmd] image-cmd-replaced IMAGE_VAR=from-image",
		"[spec-env] hello world IMAGE_VAR=overridden HOSTNAME=envargs",
		"[spec-env] args: world $(WHO)",
		"[user] uid=1000 pwd=/tmp",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s\n%s", want, out, errs)
		}
	}
}

func TestInitContainersAndEmptyDir(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  restartPolicy: Never
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: small, emptyDir: {sizeLimit: 1Mi}}
  initContainers:
  - name: first
    image: %[1]s
    command: ["sh", "-c", "echo one > /data/order"]
    volumeMounts: [{name: shared, mountPath: /data}]
  - name: second
    image: %[1]s
    command: ["sh", "-c", "echo two >> /data/order"]
    volumeMounts: [{name: shared, mountPath: /data}]
  containers:
  - name: reader
    image: %[1]s
    command: ["sh", "-c", "cat /in/order; touch /in/x 2>/dev/null || echo read-only-ok; dd if=/dev/zero of=/small/f bs=1024 count=2048 2>/dev/null || echo size-limit-ok"]
    volumeMounts:
    - {name: shared, mountPath: /in, readOnly: true}
    - {name: small, mountPath: /small}
`, env.busybox))
	out, errs := x.mustRun(0, "run", p)
	for _, want := range []string{"[reader] one\n[reader] two", "read-only-ok", "size-limit-ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s\n%s", want, out, errs)
		}
	}
	// A failing init container fails the pod and the main container never runs.
	p = x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: initfail}
spec:
  restartPolicy: Never
  initContainers:
  - {name: bad, image: %[1]s, command: ["sh", "-c", "exit 7"]}
  containers:
  - {name: main, image: %[1]s, command: ["sh", "-c", "echo must-not-run"]}
`, env.busybox))
	out, errs = x.mustRun(7, "run", p)
	if strings.Contains(out, "must-not-run") || !strings.Contains(errs, `init container "bad" failed`) {
		t.Errorf("init failure: %s / %s", out, errs)
	}
}

func TestRestartOnFailure(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: retry}
spec:
  restartPolicy: OnFailure
  volumes: [{name: state, emptyDir: {}}]
  containers:
  - name: flaky
    image: %s
    command: ["sh", "-c", "if [ -e /state/ran ]; then echo second-try; exit 0; fi; touch /state/ran; echo first-try; exit 1"]
    volumeMounts: [{name: state, mountPath: /state}]
`, env.busybox))
	out, _ := x.mustRun(0, "run", p)
	if !strings.Contains(out, "first-try") || !strings.Contains(out, "second-try") {
		t.Errorf("output %q", out)
	}
	st := x.status("retry")
	if st.Containers[0].Restarts != 1 || st.Phase != sandbox.PhaseSucceeded {
		t.Errorf("status %+v", st)
	}
}

func (x *h) status(name string) *sandbox.Status {
	x.t.Helper()
	st, err := sandbox.Root(x.root).Load(name)
	if err != nil {
		x.t.Fatal(err)
	}
	return st
}

// waitPhase waits for the sandbox to reach phase; for Running, also for
// every main container to run.
func (x *h) waitPhase(name, phase string) *sandbox.Status {
	x.t.Helper()
	return x.waitPhaseFor(name, phase, 30*time.Second)
}

func (x *h) waitPhaseFor(name, phase string, wait time.Duration) *sandbox.Status {
	x.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st, err := sandbox.Root(x.root).Load(name)
		if err != nil {
			st = &sandbox.Status{Message: err.Error()}
		}
		ok := st.Phase == phase
		for _, c := range st.Containers {
			if phase == sandbox.PhaseRunning && c.Kind == "main" && c.State != "running" {
				ok = false
			}
		}
		if ok {
			return st
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("sandbox %s is %s (%s), want %s", name, st.Phase, st.Message, phase)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDetachExecLogsStopRm(t *testing.T) {
	x := newH(t)
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: svc}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 20
  containers:
  - name: app
    image: %s
    command: ["sh", "-c", "trap 'echo got-TERM; exit 0' TERM; echo started; while true; do sleep 0.1; done"]
`, env.busybox))
	// A debug policy: the host may exec and read logs.
	out, errs := x.mustRun(0, "run", "-d", "--debug", p)
	if strings.TrimSpace(out) != "svc" || !strings.Contains(errs, "generated a policy") {
		t.Fatalf("run -d printed %q", out)
	}
	x.waitPhase("svc", sandbox.PhaseRunning)
	ps, _ := x.mustRun(0, "ps")
	if !strings.Contains(ps, "svc") || !strings.Contains(ps, "Running") || !strings.Contains(ps, "process/sim") {
		t.Errorf("ps: %s", ps)
	}
	out, _ = x.mustRun(0, "exec", "svc", "--", "cat", "/etc/hostname")
	if strings.TrimSpace(out) != "svc" {
		t.Errorf("exec output %q", out)
	}
	x.mustRun(4, "exec", "svc", "-c", "app", "--", "sh", "-c", "exit 4")
	in, _, code := x.cocoonIn([]byte("piped-input"), "exec", "-i", "svc", "--", "cat")
	if code != 0 || in != "piped-input" {
		t.Errorf("exec stdin: %q %d", in, code)
	}
	_, errs = x.mustRun(126, "exec", "svc", "-c", "nope", "--", "true")
	if !strings.Contains(errs, `exec_process "nope": no such container in the policy`) {
		t.Errorf("exec in a missing container: %s", errs)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs, _ := x.mustRun(0, "logs", "svc")
		if strings.Contains(logs, "started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs never showed output: %q", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Stop delivers SIGTERM, which the app traps: it exits at once, well
	// before the grace period.
	start := time.Now()
	x.mustRun(0, "stop", "svc")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stop took %s", d)
	}
	st := x.status("svc")
	if st.Phase != sandbox.PhaseStopped || st.Containers[0].State != "exited" {
		t.Errorf("after stop: %+v", st)
	}
	logs, _ := x.mustRun(0, "logs", "svc")
	if !strings.Contains(logs, "got-TERM") {
		t.Errorf("logs after stop: %q", logs)
	}
	x.mustRun(0, "rm", "svc")
	if n := mountsUnder(x.root); n != 0 {
		t.Errorf("%d mounts left", n)
	}
	_, errs = x.mustRun(1, "logs", "svc")
	if !strings.Contains(errs, "no such sandbox") {
		t.Errorf("logs of a removed sandbox: %s", errs)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	x := newH(t)
	// sleep as PID 1 ignores SIGTERM: only SIGKILL ends it.
	p := x.pod(simplePod("stubborn", env.busybox, "Never", "exec sleep 1000"))
	x.mustRun(0, "run", "-d", p)
	x.waitPhase("stubborn", sandbox.PhaseRunning)
	start := time.Now()
	x.mustRun(0, "stop", "-t", "1s", "stubborn")
	if d := time.Since(start); d < time.Second || d > 8*time.Second {
		t.Errorf("stop took %s, want about the 1s grace period", d)
	}
	if st := x.status("stubborn"); st.Containers[0].ExitCode != 137 {
		t.Errorf("exit code %d, want 137 (SIGKILL)", st.Containers[0].ExitCode)
	}
}

func TestAgentDiesMidRun(t *testing.T) {
	x := newH(t)
	p := x.pod(simplePod("doomed", env.busybox, "Never", "echo alive; exec sleep 1000"))
	cmd := exec.Command(filepath.Join(env.bin, "cocoon"), "--root", x.root, "run", "--generate-policy", p)
	var out, errs strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st := x.waitPhase("doomed", sandbox.PhaseRunning)
	x.waitContainerState("doomed", "main", "running")
	// This sandbox's own container processes: the agent's descendants
	// (other pods on the machine may run the same command), named by
	// start time so a reused PID is not mistaken for one of them.
	var ours []proc.Identity
	for _, pid := range descendants(st.AgentPID) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Equal(b, []byte("sleep\x001000\x00")) {
			if id, err := proc.Of(pid); err == nil {
				ours = append(ours, id)
			}
		}
	}
	if len(ours) != 1 {
		t.Fatalf("found %d container processes under the agent (pid %d), want 1", len(ours), st.AgentPID)
	}
	if err := syscall.Kill(st.AgentPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("cocoon run did not notice the agent died")
	}
	if cmd.ProcessState.ExitCode() != 137 || !strings.Contains(errs.String(), "cocoon-agent exited unexpectedly") {
		t.Errorf("exit %d, stderr %q", cmd.ProcessState.ExitCode(), errs.String())
	}
	st = x.status("doomed")
	if st.Phase != sandbox.PhaseAgentDied {
		t.Errorf("phase %s", st.Phase)
	}
	// Nothing of the sandbox keeps running: the container died with the
	// agent's pid namespace.
	for _, id := range ours {
		if id.Alive() {
			t.Errorf("container process %d survived the agent", id.PID)
		}
	}
	ps, _ := x.mustRun(0, "ps")
	if !strings.Contains(ps, "AgentDied") {
		t.Errorf("ps: %s", ps)
	}
	x.mustRun(0, "rm", "doomed")
	if n := mountsUnder(x.root); n != 0 {
		t.Errorf("%d mounts left", n)
	}
}

// descendants lists every process below pid (children, recursively), from
// /proc/PID/task/TID/children.
func descendants(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tk := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tk.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

// TestRunTrace: --trace lays out every phase of the launch in order (with
// --rm too: it is printed before the sandbox goes).
func TestRunTrace(t *testing.T) {
	x := newH(t)
	p := x.pod(simplePod("traced", env.busybox, "Never", "true"))
	_, errs := x.mustRun(0, "run", "--rm", "--trace", p)
	last := -1
	for _, want := range []string{"cocoon run started", "launch began", "agent ready", "sandbox created (policy bound",
		"images pulled and verified", "container main created", "container main started", "container main exited", "pod ended (seen by cocoon run)"} {
		i := strings.Index(errs, want)
		if i < 0 || i < last {
			t.Fatalf("trace lacks %q after the previous phase:\n%s", want, errs)
		}
		last = i
	}
}
