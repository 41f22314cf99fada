package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"cocoon.dev/cocoon/agent"
	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/internal/vmchan"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee/sim"
)

// isGuestInit reports whether the agent is a sandbox VM's init (cocoon-init
// runs it so, from the verified root filesystem).
func isGuestInit() bool {
	return os.Getpid() == 1 && len(os.Args) == 2 && os.Args[1] == guestinit.GuestFlag
}

// runGuest is the agent as a VM's init: it prepares the guest, serves the
// agent API over the virtio-serial channel, and powers the VM off when the
// host asks it to shut down or when anything fails.
func runGuest() {
	debug.SetGCPercent(policy.AgentGCPercent)
	// Guest memory is the sandbox's: keep the agent's heap small.
	debug.SetMemoryLimit(48 << 20)
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	err := guestMain(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-agent:", err)
	}
	agent.PowerOff()
}

func guestMain(log *slog.Logger) error {
	ctx := context.Background()
	params, err := agent.GuestInit()
	if err != nil {
		return err
	}
	port, err := agent.GuestPort(20 * time.Second)
	if err != nil {
		return err
	}
	ch, err := vmchan.NewGuest(port, log)
	if err != nil {
		return err
	}
	defer ch.Close()
	ready := func(msg string) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := ch.Ready(rctx, msg); err != nil {
			log.Error("report readiness", "error", err)
		}
	}
	a, pod, err := newGuestAgent(ch, params, log)
	if err != nil {
		ready("error: " + err.Error())
		return err
	}
	go agent.ReapOrphans(ctx, 5*time.Second)
	if err := a.ServePodAPI(ctx, pod...); err != nil {
		ready("error: " + err.Error())
		return err
	}
	ready("ready kernel_s=" + params["kernel_s"])
	log.Info("agent ready in the VM", "tee", params["tee"])
	return a.Serve(ctx, ch.Listener())
}

func newGuestAgent(ch *vmchan.Guest, params map[string]string, log *slog.Logger) (*agent.Agent, []net.Listener, error) {
	cfg := agent.Config{
		StateDir: agent.GuestStateDir, LayerDir: agent.GuestLayerDir, CgroupParent: "/cocoon", Runc: "/usr/bin/runc",
		SetHostname: true, Logger: log, Busybox: "/bin/busybox",
		Transport: agent.EgressTransportDial(func(ctx context.Context) (net.Conn, error) { return ch.Dial(ctx, vmchan.TagEgress) }),
		FetchLocal: func(ctx context.Context, p string) (string, error) {
			return ch.FetchTree(ctx, p, filepath.Join(agent.GuestStateDir, "local"))
		},
		VolumeSource: vmchan.FindDisk,
		// Layer disks are attached before boot: one look, no wait.
		LayerDisks: func(serial string) (string, bool) {
			d, err := guestinit.FindSerial(serial, 0)
			return d, err == nil
		},
		ListenPod: func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) },
	}
	switch params["tee"] {
	case "sim":
		// The simulated secure processor, like a real one, is outside the
		// guest: the host runtime serves it on the channel.
		cfg.Attester = sim.NewClientDial(func(ctx context.Context) (net.Conn, error) { return ch.Dial(ctx, vmchan.TagSim) })
	default:
		att, err := attester("")
		if err != nil {
			return nil, nil, err
		}
		cfg.Attester = att
		if att == nil {
			return nil, nil, fmt.Errorf("the host launched this VM as a %q guest but it has no SEV-SNP or TDX device", params["tee"])
		}
	}
	dir := filepath.Join(cfg.StateDir, "podapi")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	cfg.PodAPISocket = filepath.Join(dir, "api.sock")
	ul, err := net.Listen("unix", cfg.PodAPISocket)
	if err != nil {
		return nil, nil, fmt.Errorf("in-pod API socket: %w", err)
	}
	_ = os.Chmod(cfg.PodAPISocket, 0o666)
	tl, err := net.Listen("tcp", agent.PodAPIAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("in-pod API on %s: %w", agent.PodAPIAddr, err)
	}
	a, err := agent.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return a, []net.Listener{ul, tl}, nil
}
