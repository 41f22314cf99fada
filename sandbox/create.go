package sandbox

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"cocoon.dev/cocoon/internal/proc"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/tee"
	"golang.org/x/sys/unix"
)

// config is what the shim needs besides the pod (config.json).
type config struct {
	Isolation    string `json:"isolation"`
	AgentBinary  string `json:"agentBinary"`
	Runc         string `json:"runc,omitempty"`
	CgroupParent string `json:"cgroupParent"`
	// BaseDir resolves relative oci: and docker-archive: image paths.
	BaseDir string `json:"baseDir,omitempty"`
	// TEE is the sandbox's TEE: "sim" (the simulated secure processor,
	// run by the shim) or "" for none.
	TEE tee.Kind `json:"tee,omitempty"`
	// SimState is the simulated secure processor's state directory.
	SimState string `json:"simState,omitempty"`
	// VM sandboxes (isolation "qemu"): the guest image directory, QEMU,
	// whether to use KVM, the VM's size and how long it may take to boot.
	GuestDir           string `json:"guestDir,omitempty"`
	Firmware           string `json:"firmware,omitempty"`
	QEMU               string `json:"qemu,omitempty"`
	KVM                bool   `json:"kvm,omitempty"`
	MemoryMiB          int    `json:"memoryMiB,omitempty"`
	VCPUs              int    `json:"vcpus,omitempty"`
	BootTimeoutSeconds int    `json:"bootTimeoutSeconds,omitempty"`
	// NetNS is a network namespace the sandbox joins (one containerd made
	// and gave to CNI) rather than a new one.
	NetNS string `json:"netns,omitempty"`
}

const fileConfig = "config.json"

// Options configures Create.
type Options struct {
	Root Root
	// PodYAML is the workload; it is parsed and validated first.
	PodYAML []byte
	// ShimCommand runs the shim; the sandbox directory is appended. The CLI
	// passes its own binary and "shim".
	ShimCommand []string
	// AgentBinary is cocoon-agent.
	AgentBinary string
	// Runc is the runc binary for the agent ("" = runc on PATH).
	Runc string
	// BaseDir resolves relative oci: and docker-archive: image paths
	// (the directory of the pod file).
	BaseDir string
	// TEE is "sim" for the simulated secure processor (the process
	// backend's only one), or with Isolation "qemu" "snp" or "tdx"
	// (default: the host's, else sim).
	TEE tee.Kind
	// SimState is the simulated secure processor's state directory
	// (default: <root>/sim).
	SimState string
	// Isolation is "process" (default) or "qemu" (a VM per sandbox).
	Isolation string
	// GuestDir is the guest image for "qemu" (default: <root>/guest).
	GuestDir string
	// QEMU is the QEMU binary (default qemu-system-x86_64).
	QEMU string
	// Firmware is OVMF (SEV-SNP) or TDVF (TDX) for confidential VMs.
	Firmware string
	// BootTimeout bounds a VM's boot to a ready agent (default: 20s with
	// KVM, 180s under software emulation).
	BootTimeout time.Duration
}

// Create validates the pod, creates its sandbox directory and starts the shim,
// which launches the agent and runs the pod. It returns once the agent is up
// and the sandbox created, or with the reason it could not be.
func Create(ctx context.Context, o Options) (*pod.Pod, error) {
	p, err := pod.Parse(o.PodYAML)
	if err != nil {
		return nil, err
	}
	p.ResolveLocal(o.BaseDir)
	if o.AgentBinary == "" {
		return nil, errors.New("no cocoon-agent binary given")
	}
	if _, err := os.Stat(o.AgentBinary); err != nil {
		return nil, fmt.Errorf("cocoon-agent binary: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(string(o.Root), "sandboxes"), 0o700); err != nil {
		return nil, fmt.Errorf("create runtime state directory: %w", err)
	}
	dir := o.Root.Dir(p.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("sandbox %q already exists; remove it with `cocoon rm %s` or rename the pod", p.Name, p.Name)
		}
		return nil, fmt.Errorf("create sandbox directory: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	var id [4]byte
	_, _ = rand.Read(id[:])
	cfg := config{
		Isolation: "process", AgentBinary: o.AgentBinary, Runc: o.Runc, BaseDir: o.BaseDir,
		CgroupParent: "/cocoon/" + p.Name + "-" + hex.EncodeToString(id[:]),
	}
	if err := o.isolation(p, &cfg); err != nil {
		return nil, err
	}
	if err := writeJSONAtomic(filepath.Join(dir, fileConfig), cfg); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, filePod), o.PodYAML, 0o600); err != nil {
		return nil, err
	}
	if err := writeJSONAtomic(filepath.Join(dir, fileStatus), Status{Name: p.Name, Phase: PhasePending, Isolation: cfg.Isolation, Created: time.Now()}); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, fileShimLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	cmd := exec.Command(o.ShimCommand[0], append(o.ShimCommand[1:], dir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		return nil, fmt.Errorf("start runtime process: %w", err)
	}
	pw.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reap if it dies while we wait
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		if l != "ready" {
			// The runtime process cleans up after a failed launch: let it
			// finish before the sandbox directory goes.
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			if l == "" {
				l = "the runtime process exited early; see " + filepath.Join(dir, fileShimLog)
			}
			return nil, fmt.Errorf("sandbox %q: %s", p.Name, strings.TrimPrefix(l, "error: "))
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return nil, ctx.Err()
	}
	ok = true
	return p, nil
}

// request is what the CLI asks of a running shim (request.json + SIGUSR1).
type request struct {
	Action string `json:"action"` // stop or remove
	Grace  int    `json:"graceSeconds"`
}

func (r Root) ask(name string, req request) (*Status, error) {
	st, err := r.Load(name)
	if err != nil {
		return nil, err
	}
	shim, err := st.shim().Open()
	if err != nil {
		return st, nil // gone: nothing to ask
	}
	defer shim.Close()
	if err := writeJSONAtomic(filepath.Join(r.Dir(name), fileRequest), req); err != nil {
		return nil, err
	}
	if err := shim.Signal(unix.SIGUSR1); err != nil && !errors.Is(err, proc.ErrGone) {
		return nil, fmt.Errorf("signal runtime process: %w", err)
	}
	return st, nil
}

// Stop asks the sandbox to stop its containers (SIGTERM, then SIGKILL after
// grace) and waits until they are stopped.
func (r Root) Stop(ctx context.Context, name string, grace time.Duration) (*Status, error) {
	st, err := r.ask(name, request{Action: "stop", Grace: int(grace.Seconds())})
	if err != nil {
		return nil, err
	}
	for !Terminal(st.Phase) {
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if st, err = r.Load(name); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Remove stops the sandbox if needed, shuts its agent down, and removes
// every file of it. Mounts live in the agent's mount namespace and vanish
// with it.
func (r Root) Remove(ctx context.Context, name string, grace time.Duration) error {
	st, err := r.ask(name, request{Action: "remove", Grace: int(grace.Seconds())})
	if err != nil {
		return err
	}
	for st.shim().Alive() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %q: runtime process still running: %w", name, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	// A shim that died uncleanly may leave the agent behind.
	_ = st.agent().Signal(unix.SIGKILL)
	var cfg config
	if b, err := os.ReadFile(filepath.Join(r.Dir(name), fileConfig)); err == nil && json.Unmarshal(b, &cfg) == nil {
		removeCgroups(cfg.CgroupParent)
	}
	if err := os.RemoveAll(r.Dir(name)); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", name, err)
	}
	return nil
}

// isolation checks the isolation backend and TEE and fills their part of
// the sandbox config.
func (o *Options) isolation(p *pod.Pod, cfg *config) error {
	switch o.Isolation {
	case "", "process":
		switch o.TEE {
		case "", tee.Sim:
		default:
			return fmt.Errorf("--tee %q is not available with the process backend: its TEE is the simulated secure processor (sim); SEV-SNP and TDX need --isolation qemu on a host that has them", o.TEE)
		}
		cfg.TEE = tee.Sim
	case "qemu":
		cfg.Isolation = "qemu"
		cfg.KVM = KVMAvailable()
		host := HostTEE()
		switch o.TEE {
		case "":
			cfg.TEE = tee.Sim
			if host != "" {
				cfg.TEE = host
			}
		case tee.Sim:
			cfg.TEE = o.TEE
		case "none":
			return errors.New("--tee none: every sandbox binds its policy to a (hardware or simulated) report, so it needs a TEE; use --tee sim for development")
		case tee.SNP, tee.TDX:
			if host != o.TEE {
				return fmt.Errorf("--tee %s: this host cannot launch %s guests (%s); use --tee sim for development", o.TEE, strings.ToUpper(string(o.TEE)), hostTEEWhy(o.TEE))
			}
			cfg.TEE = o.TEE
		default:
			return fmt.Errorf("--tee %q: want snp, tdx or sim", o.TEE)
		}
		if cfg.TEE == tee.SNP || cfg.TEE == tee.TDX {
			cfg.Firmware = o.Firmware
			if cfg.Firmware == "" {
				cfg.Firmware = defaultFirmware(cfg.TEE)
			}
			if _, err := os.Stat(cfg.Firmware); err != nil {
				return fmt.Errorf("--tee %s needs guest firmware with %s support: %w (pass --firmware)", cfg.TEE, strings.ToUpper(string(cfg.TEE)), err)
			}
		}
		cfg.GuestDir, cfg.QEMU = o.GuestDir, o.QEMU
		if cfg.GuestDir == "" {
			cfg.GuestDir = o.Root.GuestDir()
		}
		if cfg.QEMU == "" {
			cfg.QEMU = "qemu-system-x86_64"
		}
		if _, err := exec.LookPath(cfg.QEMU); err != nil {
			return fmt.Errorf("--isolation qemu needs QEMU (%s not found): apt-get install qemu-system-x86", cfg.QEMU)
		}
		cfg.MemoryMiB, cfg.VCPUs = VMSize(p)
		switch {
		case o.BootTimeout > 0:
			cfg.BootTimeoutSeconds = int(o.BootTimeout.Seconds())
		case cfg.KVM:
			cfg.BootTimeoutSeconds = 20
		default:
			cfg.BootTimeoutSeconds = 180
		}
	default:
		return fmt.Errorf("--isolation %q: want process or qemu", o.Isolation)
	}
	if cfg.TEE == tee.Sim {
		cfg.SimState = o.SimState
		if cfg.SimState == "" {
			cfg.SimState = o.Root.SimState()
		}
	}
	return nil
}

// HostTEE is the confidential guest type this host can launch: "snp" when
// KVM has SEV-SNP enabled, "tdx" when it has TDX, else "".
func HostTEE() tee.Kind {
	if b, err := os.ReadFile("/sys/module/kvm_amd/parameters/sev_snp"); err == nil && strings.TrimSpace(string(b)) == "Y" {
		return tee.SNP
	}
	if b, err := os.ReadFile("/sys/module/kvm_intel/parameters/tdx"); err == nil && strings.TrimSpace(string(b)) == "Y" {
		return tee.TDX
	}
	return ""
}

func hostTEEWhy(kind tee.Kind) string {
	if err := KVMProbe(); err != nil {
		return err.Error()
	}
	if kind == tee.SNP {
		return "/sys/module/kvm_amd/parameters/sev_snp is not Y"
	}
	return "/sys/module/kvm_intel/parameters/tdx is not Y"
}

// defaultFirmware is where Debian's ovmf package puts the firmware builds
// for confidential guests.
func defaultFirmware(kind tee.Kind) string {
	if kind == tee.TDX {
		return "/usr/share/ovmf/OVMF.inteltdx.fd"
	}
	return "/usr/share/ovmf/OVMF.amdsev.fd"
}
