// Command cocoon-agent is the agent that runs inside a cocoon sandbox. It is
// started by the host runtime (cocoon), never by hand; it serves the agent API
// on a unix socket and checks every request it receives.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"cocoon.dev/cocoon/agent"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/azvtpm"
	"cocoon.dev/cocoon/tee/sim"
	"cocoon.dev/cocoon/tee/snp"
	"cocoon.dev/cocoon/tee/tdx"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == agent.PIDHolderArg {
		agent.RunPIDHolder()
		return
	}
	if isGuestInit() {
		runGuest()
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		socket   = flag.String("socket", "", "unix socket to serve the agent API on")
		state    = flag.String("state", "", "private state directory")
		layers   = flag.String("layers", "", "verified layer cache directory")
		egress   = flag.String("egress", "", "unix socket of the host's egress channel (registries)")
		runcBin  = flag.String("runc", "", "runc binary (default: runc on PATH)")
		cgroup   = flag.String("cgroup-parent", "/cocoon", "cgroup path for containers")
		readyFD  = flag.Int("ready-fd", -1, "file descriptor to write \"ready\" (or an error) to")
		isolated = flag.Bool("sandbox", false, "set up the sandbox's namespaces (the agent is their init)")
		simSP    = flag.String("sim-sp", "", "unix socket of the simulated secure processor (development TEE)")
		podAPI   = flag.Bool("pod-api", true, "serve the in-pod API on "+agent.PodAPIAddr+" and a socket mounted into containers")
		verbose  = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	debug.SetGCPercent(policy.AgentGCPercent)
	// ...with a soft limit, so the heap never grows far past what the
	// sandbox can afford because of the high GOGC.
	debug.SetMemoryLimit(256 << 20)
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var ready *os.File
	if *readyFD >= 0 {
		ready = os.NewFile(uintptr(*readyFD), "ready")
	}
	fail := func(err error) error {
		if ready != nil {
			fmt.Fprintf(ready, "error: %v\n", err)
			ready.Close()
		}
		return err
	}
	if *socket == "" || *state == "" || *layers == "" {
		return fail(fmt.Errorf("--socket, --state and --layers are required"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *isolated {
		if err := agent.SetupSandbox(*state); err != nil {
			return fail(err)
		}
		if os.Getpid() == 1 {
			go agent.ReapOrphans(ctx, 5*time.Second)
		}
	}
	cfg := agent.Config{
		StateDir: *state, LayerDir: *layers, Runc: *runcBin, CgroupParent: *cgroup,
		SetHostname: *isolated, Logger: log,
	}
	if *egress != "" {
		cfg.Transport = agent.EgressTransport(*egress)
	}
	att, err := attester(*simSP)
	if err != nil {
		return fail(err)
	}
	cfg.Attester = att
	var podListeners []net.Listener
	if *podAPI {
		dir := filepath.Join(*state, "podapi")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fail(err)
		}
		cfg.PodAPISocket = filepath.Join(dir, "api.sock")
		ul, err := net.Listen("unix", cfg.PodAPISocket)
		if err != nil {
			return fail(fmt.Errorf("in-pod API socket: %w", err))
		}
		_ = os.Chmod(cfg.PodAPISocket, 0o666)
		podListeners = append(podListeners, ul)
		if *isolated {
			tl, err := net.Listen("tcp", agent.PodAPIAddr)
			if err != nil {
				return fail(fmt.Errorf("in-pod API on %s: %w", agent.PodAPIAddr, err))
			}
			podListeners = append(podListeners, tl)
			cfg.ListenPod = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return fail(err)
	}
	_ = os.Remove(*socket)
	l, err := net.Listen("unix", *socket)
	if err != nil {
		return fail(fmt.Errorf("listen on %s: %w", *socket, err))
	}
	if err := os.Chmod(*socket, 0o600); err != nil {
		return fail(err)
	}
	if err := a.ServePodAPI(ctx, podListeners...); err != nil {
		return fail(err)
	}
	log.Info("agent ready", "socket", *socket, "pid", os.Getpid())
	if ready != nil {
		fmt.Fprintln(ready, "ready")
		ready.Close()
	}
	return a.Serve(ctx, l)
}

// attester picks the sandbox's TEE: the simulated secure processor when
// given, else the hardware TEE this machine is a guest of, else none.
func attester(simSP string) (tee.Attester, error) {
	if simSP != "" {
		return sim.NewClient(simSP), nil
	}
	switch tee.Detect() {
	case tee.SNP:
		return snp.New()
	case tee.TDX:
		return tdx.New()
	}
	// An Azure confidential VM: the paravisor keeps the hardware report
	// and the vTPM attests (untested on Azure hardware; docs/attestation.md).
	if att, err := azvtpm.Detect(&azvtpm.IMDS{}); err != nil {
		return nil, err
	} else if att != nil {
		return att, nil
	}
	return nil, nil
}
