package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/proc"
	"cocoon.dev/cocoon/internal/vmchan"
	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/tee"
)

// shim is the per-sandbox runtime process: it owns the agent process, the
// egress channel and the pod's lifecycle (init containers, restarts, stop).
type shim struct {
	dir string
	cfg config
	pod *pod.Pod
	log *slog.Logger
	cl  *Client
	// agentProc is cocoon-agent (process backend) or QEMU (VM backend).
	agentProc *proc.Child
	root      Root
	vm        *vmchan.Host // the VM channel (qemu backend)
	// network is the pod network the VM's agent configures (qemu backend
	// in a pod network namespace).
	network *agentv1.Network
	// launched is when the launch began (timings are relative to it).
	launched time.Time
	// diskBlobs are files of the pod's OCI layouts the VM takes from
	// layer disks: not copied into the guest (qemu backend). Written
	// before the VM boots, read-only after.
	diskBlobs map[string]bool

	mu sync.Mutex
	st Status

	stopOnce   sync.Once
	stopping   chan struct{} // closed when a stop was asked
	grace      time.Duration
	agentGone  chan struct{} // closed when the agent process exited
	expectExit bool
}

// RunShim is the shim's main: dir is the sandbox directory and ready (may be
// nil) receives "ready" or "error: ..." once the sandbox exists.
func RunShim(dir string, ready *os.File) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("sandbox", filepath.Base(dir))
	say := func(s string) {
		if ready != nil {
			fmt.Fprintln(ready, s)
			ready.Close()
			ready = nil
		}
	}
	s, err := newShim(dir, log)
	if err != nil {
		say("error: " + err.Error())
		return err
	}
	if err := s.launch(); err != nil {
		s.update(func(st *Status) { st.Phase, st.Message = PhaseFailed, err.Error() })
		say("error: " + err.Error())
		s.shutdown()
		return err
	}
	say("ready")
	s.run()
	return nil
}

func newShim(dir string, log *slog.Logger) (*shim, error) {
	var cfg config
	b, err := os.ReadFile(filepath.Join(dir, fileConfig))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("sandbox config: %w", err)
	}
	y, err := os.ReadFile(filepath.Join(dir, filePod))
	if err != nil {
		return nil, err
	}
	p, err := pod.Parse(y)
	if err != nil {
		return nil, err
	}
	p.ResolveLocal(cfg.BaseDir)
	var st Status
	b, err = os.ReadFile(filepath.Join(dir, fileStatus))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return shimOf(dir, log, cfg, p, st)
}

// shimOf makes the runtime process's state for the sandbox in dir.
func shimOf(dir string, log *slog.Logger, cfg config, p *pod.Pod, st Status) (*shim, error) {
	s := &shim{dir: dir, log: log, cfg: cfg, pod: p, st: st, grace: p.GracePeriod, stopping: make(chan struct{}), agentGone: make(chan struct{}), diskBlobs: map[string]bool{}}
	s.root = Root(filepath.Dir(filepath.Dir(dir)))
	self, err := proc.Of(os.Getpid())
	if err != nil {
		return nil, err
	}
	s.st.ShimPID, s.st.ShimStart, s.st.Boot = self.PID, self.Start, self.Boot
	for _, c := range append(append([]pod.Container{}, s.pod.Init...), s.pod.Main...) {
		s.st.Containers = append(s.st.Containers, ContainerStatus{Name: c.Spec.GetName(), Kind: c.Kind, Image: c.Spec.GetImage(), State: "waiting"})
	}
	s.update(func(*Status) {})
	return s, nil
}

func (s *shim) update(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
	if err := writeJSONAtomic(filepath.Join(s.dir, fileStatus), s.st); err != nil {
		s.log.Error("write status", "error", err)
	}
}

// recordAgent records the agent's (or QEMU's) PID with its start time, so
// that a later `rm` signals it only if it is still that process.
func (s *shim) recordAgent(pid int) {
	id, err := proc.Of(pid)
	if err != nil {
		s.log.Warn("record the agent's identity", "pid", pid, "error", err)
	}
	s.update(func(st *Status) { st.AgentPID, st.AgentStart = pid, id.Start })
}

func (s *shim) container(name string, f func(*ContainerStatus)) {
	s.update(func(st *Status) {
		for i := range st.Containers {
			if st.Containers[i].Name == name {
				f(&st.Containers[i])
			}
		}
	})
}

// addSpans adds the steps the agent reported for a phase to st.
func addSpans(st *Status, phase, prefix string, list []*agentv1.Span) {
	if len(list) == 0 {
		return
	}
	if st.AgentSpans == nil {
		st.AgentSpans = map[string][]AgentSpan{}
	}
	for _, sp := range list {
		st.AgentSpans[phase] = append(st.AgentSpans[phase], AgentSpan{Name: prefix + sp.GetName(), Ms: float64(sp.GetDurationUs()) / 1000})
	}
}

// agentSpans records the steps the agent reported for a phase.
func (s *shim) agentSpans(phase, prefix string, list []*agentv1.Span) {
	if len(list) > 0 {
		s.update(func(st *Status) { addSpans(st, phase, prefix, list) })
	}
}

// timing records how long since the launch a phase ended, and the steps
// the agent reported for it (one status write).
func (s *shim) timing(phase string, spans ...*agentv1.Span) {
	d := time.Since(s.launched).Seconds()
	s.update(func(st *Status) {
		if st.Timings == nil {
			st.Timings = map[string]float64{}
		}
		st.Timings[phase] = d
		addSpans(st, phase, "", spans)
	})
}

// launch starts the egress channel and the agent, and creates the sandbox.
func (s *shim) launch() error {
	s.launched = time.Now()
	s.update(func(st *Status) { st.LaunchedAt = s.launched })
	if s.cfg.Isolation == "qemu" {
		h, err := s.launchVM(context.Background())
		if err != nil {
			return err
		}
		s.vm = h
		return s.createSandbox()
	}
	egress := filepath.Join(s.dir, fileEgress)
	_ = os.Remove(egress)
	l, err := net.Listen("unix", egress)
	if err != nil {
		return fmt.Errorf("egress channel: %w", err)
	}
	serveEgress(context.Background(), l, s.log)
	// The simulated secure processor measures the agent binary (hashing
	// it) while the agent starts: the agent asks it for a report only when
	// the sandbox is created, and that waits for it below. Its socket
	// exists before the agent does, so the agent's connection waits in the
	// listen queue, never fails.
	simReady := make(chan error, 1)
	if s.cfg.TEE == tee.Sim {
		ln, err := s.simSocket()
		if err != nil {
			return err
		}
		go func() {
			d, err := s.root.agentDigest(s.cfg.AgentBinary, time.Now())
			if err != nil {
				ln.Close()
				simReady <- fmt.Errorf("measure cocoon-agent: %w", err)
				return
			}
			err = s.startSim(SimMeasurement(d), ln)
			s.timing("sim_ready_s")
			simReady <- err
		}()
	} else {
		simReady <- nil
	}
	child, err := startProcessAgent(&s.cfg, s.dir, s.root.Layers())
	if err != nil {
		return err
	}
	s.agentProc = child
	s.timing("agent_serving_s")
	s.recordAgent(child.Cmd.Process.Pid)
	go s.watchAgent()
	if err := <-simReady; err != nil {
		return err
	}
	s.timing("agent_ready_s")
	return s.createSandbox()
}

// createSandbox connects to the agent and creates the sandbox with the
// pod's policy.
func (s *shim) createSandbox() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := DialSocket(ctx, filepath.Join(s.dir, fileAgentSk))
	if err != nil {
		return err
	}
	s.cl = cl
	pol, err := PolicyText(s.pod)
	if err != nil {
		return err
	}
	resp, err := cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: s.pod.Name, Hostname: s.pod.Hostname, Volumes: s.pod.Volumes, Policy: pol, EncryptedVolumes: s.pod.Encrypted, SealedVolumes: s.pod.Sealed, Network: s.network, Sysctls: s.pod.Sysctls})
	if err != nil {
		return fmt.Errorf("create sandbox: %s", Message(err))
	}
	s.timing("sandbox_created_s", resp.GetSpans()...) // the policy bound to the report and loaded, volumes opened
	return nil
}

func (s *shim) watchAgent() {
	err := s.agentProc.Wait()
	s.mu.Lock()
	expected := s.expectExit
	s.mu.Unlock()
	if !expected {
		msg := "cocoon-agent exited unexpectedly"
		if err != nil {
			msg += " (" + err.Error() + ")"
		}
		msg += "; every container of the sandbox is gone; see " + filepath.Join(s.dir, fileAgentLg)
		s.log.Error("agent died", "error", err)
		s.update(func(st *Status) {
			st.Phase, st.Message = PhaseAgentDied, msg
			if st.ExitCode == 0 {
				st.ExitCode = 137
			}
			for i := range st.Containers {
				if st.Containers[i].State == "running" {
					st.Containers[i].State, st.Containers[i].Reason = "exited", "AgentDied"
				}
			}
		})
	}
	close(s.agentGone)
}

// run drives the pod until it is removed or the agent dies.
func (s *shim) run() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	removed := make(chan struct{})
	go func() {
		for sig := range sigs {
			req := request{Action: "remove", Grace: int(s.grace.Seconds())}
			if sig == syscall.SIGUSR1 {
				b, err := os.ReadFile(filepath.Join(s.dir, fileRequest))
				if err != nil || json.Unmarshal(b, &req) != nil {
					continue
				}
			}
			s.stop(time.Duration(req.Grace) * time.Second)
			if req.Action == "remove" {
				close(removed)
				return
			}
		}
	}()
	podDone := make(chan struct{})
	go func() {
		s.runPod()
		close(podDone)
	}()
	select {
	case <-removed:
		<-podDone
	case <-s.agentGone:
	}
	s.shutdown()
}

// stop stops restarts and asks every container to terminate.
func (s *shim) stop(grace time.Duration) {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.grace = grace
		s.mu.Unlock()
		close(s.stopping)
	})
}

func (s *shim) stopped() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// shutdown ends the agent and cleans the host side.
func (s *shim) shutdown() {
	s.mu.Lock()
	s.expectExit = true
	s.mu.Unlock()
	// An agent that refuses to shut down (no policy was loaded: it denies
	// every request) or cannot be reached is killed at once.
	grace := 15 * time.Second
	if s.cl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if _, err := s.cl.Shutdown(ctx, &agentv1.ShutdownRequest{}); err != nil {
			grace = 0
		}
		cancel()
		s.cl.Close()
	} else {
		grace = 0
	}
	if s.agentProc != nil {
		select {
		case <-s.agentGone:
		case <-time.After(grace):
			_ = s.agentProc.Cmd.Process.Kill()
			<-s.agentGone
		}
	}
	if s.vm != nil {
		s.vm.Close()
	}
	removeCgroups(s.cfg.CgroupParent)
	_ = os.Remove(filepath.Join(s.dir, fileVMSock))
	_ = os.Remove(filepath.Join(s.dir, fileAgentSk))
	_ = os.Remove(filepath.Join(s.dir, fileEgress))
	_ = os.Remove(filepath.Join(s.dir, fileSimSP))
	s.update(func(st *Status) {
		if !Terminal(st.Phase) {
			st.Phase = PhaseStopped
		}
		st.ShimPID, st.ShimStart = 0, 0
	})
}

// runPod pulls the images, runs init containers in order, then the main
// containers and sidecars until the pod completes or is stopped.
func (s *shim) runPod() {
	ctx := context.Background()
	if err := s.pull(ctx); err != nil {
		s.update(func(st *Status) { st.Phase, st.Message, st.ExitCode = PhaseFailed, err.Error(), 125 })
		return
	}
	s.timing("images_ready_s")
	s.update(func(st *Status) { st.Phase = PhaseRunning })
	var sidecars sync.WaitGroup
	initPolicy := corev1.RestartPolicyOnFailure
	if s.pod.RestartPolicy == corev1.RestartPolicyNever {
		initPolicy = corev1.RestartPolicyNever
	}
	for _, c := range s.pod.Init {
		if c.Kind == pod.KindSidecar {
			sidecars.Add(1)
			go func() {
				defer sidecars.Done()
				s.supervise(ctx, c, corev1.RestartPolicyAlways)
			}()
			continue
		}
		if code := s.supervise(ctx, c, initPolicy); code != 0 {
			s.finish(&sidecars, fmt.Sprintf("init container %q failed with exit code %d", c.Spec.GetName(), code), code)
			return
		}
		if s.stopped() {
			s.finish(&sidecars, "", 0)
			return
		}
	}
	codes := make([]int, len(s.pod.Main))
	var wg sync.WaitGroup
	for i, c := range s.pod.Main {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = s.supervise(ctx, c, s.pod.RestartPolicy)
		}()
	}
	wg.Wait()
	code, msg := 0, ""
	for i, c := range codes {
		if c != 0 {
			code, msg = c, fmt.Sprintf("container %q exited with code %d", s.pod.Main[i].Spec.GetName(), c)
			break
		}
	}
	s.finish(&sidecars, msg, code)
}

// finish terminates sidecars and records the pod's end.
func (s *shim) finish(sidecars *sync.WaitGroup, msg string, code int) {
	wasStopped := s.stopped()
	s.stop(s.grace)
	sidecars.Wait()
	s.update(func(st *Status) {
		if Terminal(st.Phase) {
			return
		}
		switch {
		case wasStopped:
			st.Phase = PhaseStopped
		case code != 0:
			st.Phase = PhaseFailed
		default:
			st.Phase = PhaseSucceeded
		}
		st.Message, st.ExitCode = msg, code
	})
}

func (s *shim) pull(ctx context.Context) error {
	imgs := s.pod.Images()
	errs := make([]error, len(imgs))
	digests := make([]string, len(imgs))
	var wg sync.WaitGroup
	for i, ref := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := s.cl.PullImage(ctx, &agentv1.PullImageRequest{Image: ref})
			if err != nil {
				errs[i] = errors.New(Message(err))
				return
			}
			digests[i] = resp.GetManifestDigest()
			prefix := ""
			if len(imgs) > 1 {
				prefix = ref + ": "
			}
			s.agentSpans("images_ready_s", prefix, resp.GetSpans())
		}()
	}
	wg.Wait()
	for i, ref := range imgs {
		s.update(func(st *Status) {
			for j := range st.Containers {
				if st.Containers[j].Image == ref {
					st.Containers[j].Digest = digests[i]
				}
			}
		})
	}
	return errors.Join(errs...)
}
