package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cocoon.dev/cocoon/guest"
	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/internal/proc"
	"cocoon.dev/cocoon/internal/vmchan"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/policy"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

const (
	fileVMSock = "vm.sock"
	// DefaultVMBaseMiB is a VM sandbox's memory besides its containers'
	// limits: kernel, agent, runc and the unpacked images (guest memory
	// holds all of them, and the emptyDirs).
	DefaultVMBaseMiB = 320
	// DefaultVMMemoryMiB is a VM sandbox's memory when no container has a
	// memory limit.
	DefaultVMMemoryMiB = 512
)

// VMCmdline is the guest kernel command line for a TEE kind ("sim", "snp"
// or "tdx"); it is part of the launch measurement.
func VMCmdline(teeKind tee.Kind) string {
	// Besides the console: no legacy keyboard-controller and PCI-bus
	// probing, no crypto self-tests, a trusted TSC: seconds under
	// emulation, tens of milliseconds under KVM. Free guest pages go back
	// to the host in 128 KiB runs (virtio-balloon free page reporting;
	// the default, 2 MiB, leaves a fragmented guest's free memory resident).
	return "console=ttyS0 panic=-1 quiet loglevel=3 random.trust_cpu=on tsc=reliable no_timer_check " +
		"i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 cryptomgr.notests pci=lastbus=0 " +
		"rcupdate.rcu_expedited=1 page_reporting.page_reporting_order=5 cocoon.tee=" + string(teeKind)
}

// VMSize derives a VM sandbox's memory and vCPUs from its pod's container
// limits: memory = DefaultVMBaseMiB + the sum of the memory limits (or
// DefaultVMMemoryMiB when none is set), vCPUs = the sum of the CPU limits
// rounded up (at least 1, at most the host's CPUs).
func VMSize(p *pod.Pod) (memMiB, vcpus int) {
	var mem, cpu int64
	for _, c := range append(append([]pod.Container{}, p.Init...), p.Main...) {
		if r := c.Spec.GetResources(); r != nil {
			mem += r.GetMemoryLimitBytes()
			cpu += r.GetCpuLimitMillis()
		}
	}
	memMiB = DefaultVMMemoryMiB
	if mem > 0 {
		memMiB = DefaultVMBaseMiB + int((mem+(1<<20)-1)>>20)
	}
	vcpus = int((cpu + 999) / 1000)
	vcpus = max(1, min(vcpus, runtime.NumCPU()))
	return memMiB, vcpus
}

// SimVMMeasurement is the MEASUREMENT the simulated secure processor gives
// a VM launch of the guest image img with the command line cmdline.
func SimVMMeasurement(img *guest.Image, cmdline string) [48]byte {
	return sim.Measure(sim.LaunchConfig{
		Isolation: "qemu", AgentDigest: img.AgentDigest,
		KernelDigest: img.KernelDigest, InitrdDigest: img.InitrdDigest, Cmdline: cmdline,
	})
}

// launchVM is the "qemu" isolation backend: it boots the guest image in a
// VM, connects the channel to its agent, serves the host's side of it
// (egress, the simulated secure processor, local image sources) and proxies
// the agent API to the sandbox's agent socket.
func (s *shim) launchVM(ctx context.Context) (*vmchan.Host, error) {
	img, err := guest.Load(s.cfg.GuestDir)
	if err != nil {
		return nil, fmt.Errorf("guest image: %w (build it with `cocoon guest build`)", err)
	}
	cmdline := VMCmdline(s.cfg.TEE)
	disks, err := s.layerDiskDrives(ctx)
	if err != nil {
		return nil, err
	}
	qc := QEMUConfig{
		KVM: s.cfg.KVM, Binary: s.cfg.QEMU, Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: cmdline,
		MemoryMiB: s.cfg.MemoryMiB, VCPUs: s.cfg.VCPUs, AgentSocket: filepath.Join(s.dir, fileVMSock),
		Drives: append(append([]Drive{{Path: img.Rootfs, Serial: guestinit.RootfsSerial, ReadOnly: true}}, s.volumeDrives()...), disks...),
	}
	switch s.cfg.TEE {
	case tee.SNP, tee.TDX:
		// The launch binds the policy: SEV-SNP's HOST_DATA is its SHA-256,
		// TDX's MRCONFIGID its SHA-384; the agent refuses any other policy.
		text, err := PolicyText(s.pod)
		if err != nil {
			return nil, err
		}
		if text == nil {
			return nil, errors.New("a confidential VM needs a policy to bind to its launch")
		}
		qc.TEE, qc.Firmware = s.cfg.TEE, s.cfg.Firmware
		if s.cfg.TEE == tee.SNP {
			qc.HostData = policy.Hash(text, tee.SNP)
		} else {
			qc.MRConfigID = policy.Hash(text, tee.TDX)
		}
	}
	if s.cfg.NetNS != "" {
		tap, mac, n, err := wirePodNetwork(s.cfg.NetNS)
		if err != nil {
			return nil, err
		}
		qc.Tap, qc.MAC, s.network = tap, mac, n
	}
	args, err := QEMUArgs(qc)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, fileAgentLg), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	_ = os.Remove(qc.AgentSocket)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	child, err := proc.StartPinnedIn(cmd, s.cfg.NetNS) // in the pod's network namespace, if any: its tap is there
	if err != nil {
		return nil, fmt.Errorf("start %s: %w (install QEMU: apt-get install qemu-system-x86)", args[0], err)
	}
	s.agentProc = child
	s.recordAgent(cmd.Process.Pid)
	go s.watchAgent()
	fail := func(err error) (*vmchan.Host, error) {
		// A VM that did not come up is stopped now, not after the
		// shutdown's grace period.
		s.mu.Lock()
		s.expectExit = true
		s.mu.Unlock()
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%w%s", err, consoleTail(filepath.Join(s.dir, fileAgentLg)))
	}
	conn, err := dialVM(ctx, qc.AgentSocket, s.agentGone)
	if err != nil {
		return fail(err)
	}
	h, err := vmchan.NewHost(conn, s.log)
	if err != nil {
		conn.Close()
		return fail(err)
	}
	if s.cfg.TEE == tee.Sim {
		if err := s.startSim(SimVMMeasurement(img, cmdline), h.Service(vmchan.TagSim)); err != nil {
			h.Close()
			return nil, err
		}
	}
	serveEgress(context.Background(), h.Service(vmchan.TagEgress), s.log)
	go vmchan.ServeFiles(h.Service(vmchan.TagFile), s.localSource, func(p string) bool { return s.diskBlobs[p] }, s.log)
	timeout := time.Duration(s.cfg.BootTimeoutSeconds) * time.Second
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type res struct {
		msg string
		err error
	}
	rc := make(chan res, 1)
	go func() { m, err := h.WaitReady(rctx); rc <- res{m, err} }()
	var r res
	select {
	case r = <-rc:
		if r.err != nil {
			// The channel closes when QEMU exits: wait for that, so the
			// error says so and the console holds the guest's last words.
			select {
			case <-s.agentGone:
				r.err = errors.New("the VM exited before its agent was ready")
			case <-time.After(2 * time.Second):
			}
		}
	case <-s.agentGone:
		r.err = errors.New("the VM exited before its agent was ready")
	}
	kernel, isReady := strings.CutPrefix(r.msg, "ready")
	if r.err == nil && !isReady {
		r.err = fmt.Errorf("cocoon-agent in the VM: %s", strings.TrimPrefix(r.msg, "error: "))
	}
	if errors.Is(r.err, context.DeadlineExceeded) {
		r.err = fmt.Errorf("the VM's agent was not ready after %s", timeout)
	}
	if r.err != nil {
		h.Close()
		return fail(r.err)
	}
	s.log.Info("VM agent ready", "took", time.Since(s.launched), "kvm", s.cfg.KVM, "memory_mib", qc.MemoryMiB, "vcpus", qc.VCPUs)
	s.timing("agent_ready_s")
	if k, err := strconv.ParseFloat(strings.TrimPrefix(strings.TrimSpace(kernel), "kernel_s="), 64); err == nil {
		// The guest's uptime when its init started: the kernel's boot.
		s.update(func(st *Status) { st.Timings["vm_kernel_s"] = k })
	}
	sock := filepath.Join(s.dir, fileAgentSk)
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		h.Close()
		return nil, err
	}
	_ = os.Chmod(sock, 0o600)
	go proxyAgent(l, h)
	go func() {
		<-h.Done()
		l.Close()
	}()
	return h, nil
}

// localSource reports whether path is one of the pod's local image sources
// (the only host files a VM's agent may ask for).
func (s *shim) localSource(path string) bool {
	for _, im := range s.pod.Images() {
		for _, t := range []string{"oci:", "docker-archive:"} {
			rest, ok := strings.CutPrefix(im, t)
			if !ok {
				continue
			}
			if i := strings.IndexByte(rest, '@'); i >= 0 {
				rest = rest[:i]
			}
			if rest == path || strings.HasPrefix(rest, path+":") {
				return true
			}
		}
	}
	return false
}

func dialVM(ctx context.Context, sock string, gone <-chan struct{}) (net.Conn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			return c, nil
		}
		select {
		case <-gone:
			return nil, errors.New("QEMU exited")
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("QEMU's channel socket: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxyAgent gives each connection to the sandbox's agent socket its own
// stream to the agent in the VM.
func proxyAgent(l net.Listener, h *vmchan.Host) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			st, err := h.Open()
			if err != nil {
				return
			}
			defer st.Close()
			relay(st, c, c, st)
		}()
	}
}

// consoleTail returns the last lines of the VM console, for errors,
// without terminal control sequences.
func consoleTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = ansiRE.ReplaceAll(b, nil)
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(string(b), "\r", "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	if len(lines) > 4 {
		lines = lines[len(lines)-4:]
	}
	// One line: the error travels as a line to the CLI.
	return "; the VM console's last lines: " + strings.Join(lines, " | ")
}

var ansiRE = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[=>c])`)

// volumeDrives attaches the pod's encrypted volumes whose source is a host
// file.
func (s *shim) volumeDrives() []Drive {
	var ds []Drive
	for _, v := range s.pod.Encrypted {
		if !strings.HasPrefix(v.GetSource(), "/") {
			continue // a URL: the agent reads it through the egress channel
		}
		ds = append(ds, Drive{Path: v.GetSource(), Serial: vmchan.DiskSerial(v.GetSource()), ReadOnly: v.GetReadOnly()})
	}
	return ds
}
