// Package e2e runs the cocoon CLI as a user would: real runc, images over the
// OCI distribution protocol from an in-process registry on loopback, and OCI
// layouts on disk. It needs root, runc and busybox-static.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
	"cocoon.dev/cocoon/sandbox"
)

var env struct {
	bin     string // directory with cocoon and cocoon-agent
	reg     *testimage.Registry
	busybox string // registry reference by tag
	pinned  string // registry reference by digest
	echo    string // busybox + /echo server, by digest
	layout  string // OCI layout dir holding tag "busybox"
	bbImage v1.Image
	bbLayer v1.Layer
	skipWhy string
}

func TestMain(m *testing.M) {
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	var missing []string
	if os.Getuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		missing = append(missing, "runc")
	}
	if _, err := os.Stat(testimage.BusyboxPath); err != nil {
		missing = append(missing, "busybox-static")
	}
	if len(missing) > 0 {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "e2e: missing %s; .ci/run installs them\n", strings.Join(missing, ", "))
			return 1
		}
		env.skipWhy = "e2e tests need " + strings.Join(missing, ", ")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "cocoon-e2e")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	env.bin = filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", env.bin+"/", "cocoon.dev/cocoon/cmd/cocoon", "cocoon.dev/cocoon/cmd/cocoon-agent", "cocoon.dev/cocoon/cmd/cocoon-init", "cocoon.dev/cocoon/cmd/containerd-shim-cocoon-v2")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		return 1
	}
	env.reg = testimage.NewRegistry()
	defer env.reg.Close()
	if env.bbLayer, err = testimage.BusyboxLayer(); err != nil {
		panic(err)
	}
	bb, err := testimage.Busybox()
	if err != nil {
		panic(err)
	}
	env.bbImage = bb
	if env.busybox, env.pinned, err = env.reg.Push("library/busybox:stable", bb); err != nil {
		panic(err)
	}
	echoBin, err := testimage.GoBinary("cocoon.dev/cocoon/examples/hello/echo")
	if err != nil {
		panic(err)
	}
	el, _ := testimage.Layer([]testimage.File{{Path: "/echo", Data: echoBin, Mode: 0o755}})
	echoImg, _ := testimage.Busybox(el)
	if _, env.echo, err = env.reg.Push("demo/echo:v1", echoImg); err != nil {
		panic(err)
	}
	env.layout = filepath.Join(dir, "layout")
	if err := testimage.WriteLayout(env.layout, map[string]v1.Image{"busybox": bb}); err != nil {
		panic(err)
	}
	defer stopCRI()
	return m.Run()
}

// h is a test's view of cocoon with its own state root.
type h struct {
	t    *testing.T
	root string
	// simState, when set, is the simulated secure processor's state the
	// CLI uses (the key broker trusts its key), rather than ROOT/sim.
	simState string
}

func newH(t *testing.T) *h {
	t.Helper()
	if env.skipWhy != "" {
		t.Skip(env.skipWhy)
	}
	x := &h{t: t, root: t.TempDir()}
	t.Cleanup(func() {
		// Remove whatever the test left running.
		out, _, _ := x.cocoon("ps", "-o", "json")
		for _, line := range strings.Split(out, "\n") {
			if n, ok := strings.CutPrefix(strings.TrimSpace(line), `"name": "`); ok {
				x.cocoon("rm", "-f", strings.TrimSuffix(n, `",`))
			}
		}
	})
	return x
}

// cocoon runs the CLI and returns stdout, stderr and the exit code.
func (x *h) cocoon(args ...string) (string, string, int) {
	return x.cocoonIn(nil, args...)
}

// cocoonRaw runs the CLI without adding --generate-policy to run.
func (x *h) cocoonRaw(args ...string) (string, string, int) {
	x.t.Helper()
	return x.exec(nil, args)
}

func sleep() { time.Sleep(50 * time.Millisecond) }

func (x *h) cocoonIn(stdin []byte, args ...string) (string, string, int) {
	x.t.Helper()
	if len(args) > 0 && args[0] == "run" {
		// Test pods get a policy generated on the fly; tests of the
		// policy itself generate theirs explicitly.
		args = append([]string{"run", "--generate-policy"}, args[1:]...)
	}
	return x.exec(stdin, args)
}

func (x *h) exec(stdin []byte, args []string) (string, string, int) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	global := []string{"--root", x.root}
	if x.simState != "" {
		global = append(global, "--sim-state", x.simState)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(env.bin, "cocoon"), append(global, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		x.t.Fatalf("cocoon %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// pod writes a pod file and returns its path.
func (x *h) pod(yaml string) string {
	x.t.Helper()
	p := filepath.Join(x.t.TempDir(), "pod.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		x.t.Fatal(err)
	}
	return p
}

// dialAgent connects to a running pod's agent API as the host may, closed
// at the end of the test.
func (x *h) dialAgent(pod string) *sandbox.Client {
	x.t.Helper()
	cl, err := sandbox.DialSocket(context.Background(), sandbox.Root(x.root).AgentSocket(pod))
	if err != nil {
		x.t.Fatal(err)
	}
	x.t.Cleanup(func() { cl.Close() })
	return cl
}

// mustRun runs cocoon and fails the test unless it exits with want.
func (x *h) mustRun(want int, args ...string) (string, string) {
	x.t.Helper()
	out, errs, code := x.cocoon(args...)
	if code != want {
		x.t.Fatalf("cocoon %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errs)
	}
	return out, errs
}

// mountsUnder counts the host's mounts below dir.
func mountsUnder(dir string) int {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, dir) {
			n++
		}
	}
	return n
}
