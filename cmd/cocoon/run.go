package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/guest"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/sandbox"
	"cocoon.dev/cocoon/tee"
)

func newRunCmd(g *globals) *cobra.Command {
	var detach, rm, trace bool
	var teeKind string
	gen := &runGen{}
	vm := &vmFlags{}
	cmd := &cobra.Command{
		Use:   "run [-d] POD.yaml",
		Short: "Run a pod in a new sandbox",
		Long: `Run the pod described by POD.yaml (a Pod, or the pod template of a Deployment,
Job, StatefulSet or DaemonSet) in a new sandbox named after the pod. An Azure
Container Instances ARM template runs too: its container group, translated to a
pod, with the policy in its ccePolicy (cocoon policy generate TEMPLATE.json).

In the foreground, cocoon shows image pull progress on a terminal, streams the
containers' output (prefixed with the container name when the pod has several),
and exits with the exit code of the main container — with several, the first
non-zero one. Ctrl-C stops the pod. With -d it prints the pod name and returns.

Images may be registry references (plain HTTP is used only for registries on
loopback), oci:PATH[:TAG] (an OCI layout) or docker-archive:PATH. The agent
fetches and verifies them inside the sandbox.

Exit codes: the container's; 125 when cocoon itself failed (bad spec, pull
error); 137 when the sandbox's agent died.`,
		Example: `  cocoon run examples/hello/pod.yaml
  cocoon run -d pod.yaml && cocoon logs mypod
  cocoon run --isolation qemu pod.yaml     # the pod in its own VM (docs/vm.md)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var start time.Time
			if trace {
				start = time.Now()
			}
			return runPod(cmd, g, args[0], teeKind, detach, rm, start, gen, vm)
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "run in the background and print the pod name")
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the sandbox when the pod ends (foreground only)")
	cmd.Flags().BoolVar(&trace, "trace", false, "print where the time went when the pod ends: launch, agent ready, policy bound, images, each container's create, start and exit")
	cmd.Flags().StringVar(&teeKind, "tee", "", "TEE of the sandbox: sim (simulated secure processor, INSECURE; the process backend's only one), or with --isolation qemu snp or tdx (default: the host's, else sim)")
	vm.add(cmd)
	cmd.Flags().BoolVar(&gen.generate, "generate-policy", false, "generate the pod's policy now when it has none (and say so)")
	gen.add(cmd)
	gen.aci.add(cmd)
	return cmd
}

type runGen struct {
	generate bool
	genFlags
	aci aciFlags
}

// vmFlags are the run flags of the qemu isolation backend.
type vmFlags struct {
	isolation, qemu, firmware string
	bootTimeout               time.Duration
}

func (v *vmFlags) add(cmd *cobra.Command) {
	def := os.Getenv("COCOON_ISOLATION")
	if def == "" {
		def = "process"
	}
	f := cmd.Flags()
	f.StringVar(&v.isolation, "isolation", def, "isolation backend: process (namespaces) or qemu (a VM per sandbox) (env COCOON_ISOLATION)")
	f.StringVar(&v.qemu, "qemu", "", "QEMU binary for --isolation qemu (default qemu-system-x86_64)")
	f.StringVar(&v.firmware, "firmware", "", "guest firmware for SEV-SNP (OVMF) or TDX (TDVF) VMs")
	f.DurationVar(&v.bootTimeout, "boot-timeout", 0, "how long a VM may take to boot to a ready agent (default 20s with KVM, 3m under emulation)")
}

// runPod runs the pod in file; with a non-zero traceStart (--trace) it
// prints the launch's timeline from then when the pod ends.
func runPod(cmd *cobra.Command, g *globals, file, teeKind string, detach, rm bool, traceStart time.Time, gen *runGen, vm *vmFlags) error {
	ctx := cmd.Context()
	y, err := os.ReadFile(file)
	if err != nil {
		return &exitError{125, fmt.Sprintf("read pod spec: %v", err)}
	}
	agentBin, err := g.agentBinary()
	if err != nil {
		return &exitError{125, err.Error()}
	}
	if pod.IsACITemplate(y) {
		if _, y, err = translateACI(cmd, file, y, &gen.aci); err != nil {
			return &exitError{125, err.Error()}
		}
	}
	parsed, err := pod.Parse(y)
	if err != nil {
		return &exitError{125, fmt.Sprintf("%s: %v", file, err)}
	}
	if _, ok := parsed.Annotations[sandbox.PolicyAnnotation]; !ok {
		if !gen.generate {
			return &exitError{125, fmt.Sprintf("%s: pod %s has no %s annotation: every sandbox enforces a policy bound to its hardware report; generate one with `cocoon policy generate %s`, or run with --generate-policy", file, parsed.Name, sandbox.PolicyAnnotation, file)}
		}
		_, text, err := generate(cmd, g, file, y, &gen.genFlags)
		if err != nil {
			return &exitError{125, err.Error()}
		}
		if y, err = annotate(y, text); err != nil {
			return &exitError{125, err.Error()}
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "cocoon: generated a policy for %s (sha256 %s)\n", parsed.Name, policy.HashHex(text, tee.Sim))
	}
	self, err := os.Executable()
	if err != nil {
		return &exitError{125, err.Error()}
	}
	root := g.Root()
	if vm.isolation == "qemu" {
		d, err := guest.FileDigest(agentBin)
		if err != nil {
			return &exitError{125, fmt.Sprintf("cocoon-agent: %v", err)}
		}
		if _, err := ensureGuest(ctx, root.GuestDir(), agentBin, d, cmd.ErrOrStderr()); err != nil {
			return &exitError{125, fmt.Sprintf("guest image: %v", err)}
		}
	}
	p, err := sandbox.Create(ctx, sandbox.Options{
		Root: root, PodYAML: y, ShimCommand: []string{self, "--root", g.root, "shim"},
		AgentBinary: agentBin, Runc: g.runc, BaseDir: baseDir(file), TEE: tee.Kind(teeKind), SimState: g.sim(),
		Isolation: vm.isolation, QEMU: vm.qemu, Firmware: vm.firmware, BootTimeout: vm.bootTimeout,
	})
	if err != nil {
		return &exitError{125, fmt.Sprintf("%s: %v", file, err)}
	}
	for _, w := range p.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	if detach {
		if g.json() {
			return printJSON(cmd.OutOrStdout(), map[string]string{"name": p.Name})
		}
		fmt.Fprintln(cmd.OutOrStdout(), p.Name)
		return nil
	}
	if rm {
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := root.Remove(rctx, p.Name, 0); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "cocoon: remove:", err)
			}
		}()
	}
	cl, err := root.Dial(ctx, p.Name)
	if err != nil {
		return &exitError{125, err.Error()}
	}
	defer cl.Close()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			fmt.Fprintln(cmd.ErrOrStderr(), "cocoon: stopping", p.Name)
			_, _ = root.Stop(context.Background(), p.Name, 10*time.Second)
		}
	}()

	showPullProgress(ctx, root, cl, p, cmd.ErrOrStderr())
	st := followPod(ctx, root, cl, p, cmd.OutOrStdout())
	if !traceStart.IsZero() {
		printTrace(cmd.ErrOrStderr(), p.Name, st, traceStart)
	}
	switch st.Phase {
	case sandbox.PhaseSucceeded, sandbox.PhaseStopped:
	default:
		if st.Message != "" {
			fmt.Fprintf(cmd.ErrOrStderr(), "cocoon: pod %s %s: %s\n", p.Name, st.Phase, st.Message)
		}
		for _, c := range st.Containers {
			if c.State == "exited" && c.Reason != "" && c.Reason != "Completed" && c.Reason != "Error" {
				fmt.Fprintf(cmd.ErrOrStderr(), "cocoon: container %s: %s\n", c.Name, c.Reason)
			}
		}
	}
	if g.json() {
		_ = printJSON(cmd.OutOrStdout(), st)
	}
	if st.ExitCode != 0 {
		return &exitError{st.ExitCode, ""}
	}
	return nil
}

// showPullProgress renders the agent's pull progress on a terminal until the
// pod leaves Pending.
func showPullProgress(ctx context.Context, root sandbox.Root, cl *sandbox.Client, p *pod.Pod, w io.Writer) {
	f, ok := w.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	shown := false
	var last time.Time
	for {
		st, err := root.Load(p.Name)
		if err != nil || st.Phase != sandbox.PhasePending {
			break
		}
		if tty && time.Since(last) >= 100*time.Millisecond {
			last = time.Now()
			var line bytes.Buffer
			for _, img := range p.Images() {
				pr, err := cl.PullProgress(ctx, &agentv1.PullProgressRequest{Image: img})
				if err != nil {
					continue
				}
				fmt.Fprintf(&line, "%s %s  ", shortRef(img), bar(pr))
			}
			if line.Len() > 0 {
				fmt.Fprintf(w, "\r\033[Kpulling %s", line.String())
				shown = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	if shown {
		fmt.Fprint(w, "\r\033[K")
	}
}

func baseDir(file string) string {
	abs, err := filepath.Abs(file)
	if err != nil {
		return ""
	}
	return filepath.Dir(abs)
}

func shortRef(s string) string {
	if len(s) > 40 {
		return "…" + s[len(s)-39:]
	}
	return s
}

func bar(p *agentv1.PullProgressResponse) string {
	const width = 20
	frac := 0.0
	if p.GetBytesTotal() > 0 {
		frac = float64(p.GetBytesDone()) / float64(p.GetBytesTotal())
	} else if p.GetLayersTotal() > 0 {
		frac = float64(p.GetLayersDone()) / float64(p.GetLayersTotal())
	}
	frac = min(max(frac, 0), 1)
	n := int(frac * width)
	return fmt.Sprintf("[%s%s] %d/%d layers %s/%s", bytes.Repeat([]byte("#"), n), bytes.Repeat([]byte("."), width-n),
		p.GetLayersDone(), p.GetLayersTotal(), human(p.GetBytesDone()), human(p.GetBytesTotal()))
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

// followPod streams every container's log to w until the pod is terminal and
// the logs are drained, and returns the final status.
func followPod(ctx context.Context, root sandbox.Root, cl *sandbox.Client, p *pod.Pod, w io.Writer) *sandbox.Status {
	all := append(append([]pod.Container{}, p.Init...), p.Main...)
	var mu sync.Mutex
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range all {
		prefix := ""
		if len(all) > 1 {
			prefix = "[" + c.Spec.GetName() + "] "
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			followLog(ctx, cl, c.Spec.GetName(), prefix, w, &mu, done)
		}()
	}
	var st *sandbox.Status
	for {
		var err error
		st, err = root.Load(p.Name)
		if err != nil {
			st = &sandbox.Status{Phase: sandbox.PhaseUnknown, Message: err.Error(), ExitCode: 125}
			break
		}
		if sandbox.Terminal(st.Phase) {
			break
		}
		select {
		case <-ctx.Done():
			st.ExitCode = 130
			close(done)
			wg.Wait()
			return st
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(done)
	wg.Wait()
	return st
}

// followLog copies one container's log, line-prefixed, until it reaches EOF
// after done is closed (or the container never existed).
func followLog(ctx context.Context, cl *sandbox.Client, name, prefix string, w io.Writer, mu *sync.Mutex, done <-chan struct{}) {
	var off int64
	var partial []byte
	flush := func(data []byte, final bool) {
		partial = append(partial, data...)
		mu.Lock()
		defer mu.Unlock()
		for {
			i := bytes.IndexByte(partial, '\n')
			if i < 0 {
				break
			}
			fmt.Fprintf(w, "%s%s\n", prefix, partial[:i])
			partial = partial[i+1:]
		}
		if final && len(partial) > 0 {
			fmt.Fprintf(w, "%s%s\n", prefix, partial)
			partial = nil
		}
	}
	finished := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	for {
		resp, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: name, Offset: off, WaitMs: 200})
		if err != nil {
			if finished() {
				flush(nil, true)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		if len(resp.GetData()) > 0 {
			flush(resp.GetData(), false)
		}
		off = resp.GetNextOffset()
		if len(resp.GetData()) == 0 && finished() {
			flush(nil, true)
			return
		}
		if resp.GetEof() && len(resp.GetData()) == 0 {
			// The container exited and every byte was read: wait for the
			// pod to end (or the container to restart) instead of asking
			// again at once.
			select {
			case <-ctx.Done():
				return
			case <-done:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// printTrace prints the pod's launch timeline (cocoon run --trace), in ms
// since the command started, with the time each step took.
func printTrace(w io.Writer, name string, st *sandbox.Status, start time.Time) {
	fmt.Fprintf(w, "trace of %s (ms since cocoon run started; step = since the line before):\n", name)
	prev := time.Duration(0)
	for _, e := range st.Trace(start, time.Now()) {
		fmt.Fprintf(w, "  %8.1f  %+7.1f  %s\n", ms(e.At), ms(e.At-prev), e.What)
		for _, a := range e.Agent {
			fmt.Fprintf(w, "  %8s  %7.1f    agent: %s\n", "", a.Ms, a.Name)
		}
		prev = e.At
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
