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
	"syscall"
	"time"

	"cocoon.dev/cocoon/agent"
)

func main() {
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
		verbose  = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
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
	log.Info("agent ready", "socket", *socket, "pid", os.Getpid())
	if ready != nil {
		fmt.Fprintln(ready, "ready")
		ready.Close()
	}
	return a.Serve(ctx, l)
}
