// Package agent is cocoon-agent: it runs inside the sandbox (the TEE), serves
// the host <-> agent API over ttrpc, checks every request with one
// enforcement hook, pulls and verifies images itself and runs containers with
// runc.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/containerd/go-runc"
	"github.com/containerd/ttrpc"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/image"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/volume"
)

// Config configures an Agent.
type Config struct {
	// StateDir is the agent's private state: container bundles, logs,
	// emptyDirs. In a sandbox it is a tmpfs only the agent's mount
	// namespace sees.
	StateDir string
	// LayerDir is the verified layer cache.
	LayerDir string
	// Runc is the runc binary (default "runc" on PATH).
	Runc string
	// Transport carries outside traffic (registries); in a sandbox it is
	// the host's egress channel.
	Transport http.RoundTripper
	// Enforcer checks every request; nil means the policy engine, which
	// denies everything until a policy bound to the hardware is loaded.
	Enforcer Enforcer
	// CgroupParent is the cgroup path under which containers are placed.
	CgroupParent string
	// Attester produces evidence from the sandbox's TEE (nil: none).
	Attester tee.Attester
	// PodAPISocket, when set, is the host path of the in-pod API socket,
	// bind-mounted into every container at /run/cocoon/api.sock.
	PodAPISocket string
	// ListenPod listens on an address of the pod's own network (its
	// loopback), for the APIs a policy turns on (the Azure SKR API); nil
	// when the sandbox has no network of its own.
	ListenPod func(addr string) (net.Listener, error)
	// SetHostname makes CreateSandbox set the agent's own UTS hostname (the
	// agent must be in its own UTS namespace).
	SetHostname bool
	// Busybox, set in a VM's agent, configures the pod network the host
	// wired to the VM (CreateSandbox's network); without it a network
	// configuration is refused.
	Busybox string
	// FetchLocal, when set, makes a local image source (an OCI layout or a
	// docker archive named by an absolute host path) present in the
	// sandbox before it is pulled and returns its path there: a VM's agent
	// copies it from the host.
	FetchLocal func(ctx context.Context, path string) (string, error)
	// VolumeSource, when set, maps an encrypted volume's host path to the
	// device the agent opens (a VM's virtio disk).
	VolumeSource func(path string) (string, error)
	// LayerDisks, when set, finds a layer's verified read-only disk the
	// host attached (its virtio serial, guestinit.LayerDiskSerial) so a
	// layer the policy pins a disk for is opened with dm-verity instead of
	// pulled (a VM's agent; nil: always pull).
	LayerDisks func(serial string) (dev string, ok bool)
	// MaxLayerBytes bounds a layer's uncompressed size when the policy
	// pins none (0: image.DefaultMaxLayerBytes).
	MaxLayerBytes int64
	Logger        *slog.Logger
}

// Agent is the in-sandbox agent.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	runc   *runc.Runc
	puller *image.Puller
	disks  layerDisks
	ctx    context.Context // lives as long as the agent
	cancel context.CancelFunc

	mu         sync.Mutex
	sandbox    *sandboxState
	images     map[string]*image.Image
	pulls      map[string]*image.Progress
	containers map[string]*container
	logs       map[string]*logFile
	encrypted  []volume.Closer
	aael       aaelLog
	// pidHolder is the init of the pod's shared PID namespace, started
	// when a container first asks to share it.
	pidHolder *exec.Cmd
	done      chan struct{}
	closeOnce sync.Once
}

type sandboxState struct {
	name, hostname string
	volumes        map[string]string
	files          podFiles
}

// New creates an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.StateDir == "" || cfg.LayerDir == "" {
		return nil, errors.New("agent: StateDir and LayerDir are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/cocoon"
	}
	store, err := image.NewLayerStore(cfg.LayerDir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"runc", "containers", "logs", "pod", "volumes"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o700); err != nil {
			return nil, fmt.Errorf("agent state: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		runc:       &runc.Runc{Command: cfg.Runc, Root: filepath.Join(cfg.StateDir, "runc")},
		puller:     &image.Puller{Store: store, Transport: cfg.Transport, MaxLayerBytes: cfg.MaxLayerBytes},
		images:     map[string]*image.Image{},
		pulls:      map[string]*image.Progress{},
		containers: map[string]*container{},
		logs:       map[string]*logFile{},
		done:       make(chan struct{}),
	}
	if a.cfg.Enforcer == nil {
		a.cfg.Enforcer = policy.NewEngine(a.bindPolicy, a.pulledImages)
	}
	a.puller.LayerSize = a.pinnedLayerSize
	return a, nil
}

// Serve serves the agent API on l until Shutdown is called or ctx ends.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(interceptor(a.cfg.Enforcer)))
	if err != nil {
		return fmt.Errorf("agent: ttrpc server: %w", err)
	}
	agentv1.RegisterAgentService(srv, &service{a: a})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, l) }()
	select {
	case err := <-errc:
		if errors.Is(err, ttrpc.ErrServerClosed) {
			return nil
		}
		return err
	case <-a.done:
	case <-ctx.Done():
	}
	a.cleanup()
	sctx, cancel := context.WithTimeout(context.Background(), 2e9)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// Done is closed when the agent was asked to shut down.
func (a *Agent) Done() <-chan struct{} { return a.done }

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func checkName(kind, n string) error {
	if !nameRE.MatchString(n) {
		return fmt.Errorf("%s name %q must be a DNS label (lowercase letters, digits, '-', at most 63): %w", kind, n, errInvalid)
	}
	return nil
}
