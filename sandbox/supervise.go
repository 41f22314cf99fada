package sandbox

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/pod"
)

const maxBackoff = 30 * time.Second

func (s *shim) agentDead() bool {
	select {
	case <-s.agentGone:
		return true
	default:
		return false
	}
}

// supervise runs one container under a restart policy and returns its last
// exit code. Failures to create or start are final (exit code 128): they come
// from the spec or a policy denial, and retrying would not change them.
func (s *shim) supervise(ctx context.Context, c pod.Container, policy corev1.RestartPolicy) int {
	name := c.Spec.GetName()
	backoff := time.Second
	code := 0
	for attempt := 0; ; attempt++ {
		if s.stopped() || s.agentDead() {
			return code
		}
		if attempt > 0 {
			_, _ = s.cl.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: name})
		}
		fail := func(reason string) int {
			s.log.Error("container failed to start", "container", name, "reason", reason)
			s.container(name, func(cs *ContainerStatus) {
				cs.State, cs.ExitCode, cs.Reason, cs.Finished = "exited", 128, reason, time.Now()
			})
			return 128
		}
		created, err := s.cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: c.Spec})
		if err != nil {
			return fail("CreateError: " + Message(err))
		}
		if attempt == 0 {
			s.timing("container_"+name+"_created_s", created.GetSpans()...)
		}
		started, err := s.cl.StartContainer(ctx, &agentv1.StartContainerRequest{Container: name})
		if err != nil {
			return fail("StartError: " + Message(err))
		}
		if attempt == 0 {
			s.timing("container_"+name+"_started_s", started.GetSpans()...)
		}
		s.container(name, func(cs *ContainerStatus) {
			cs.State, cs.Started, cs.Reason, cs.Restarts = "running", time.Now(), "", attempt
		})
		var reason string
		code, reason = s.waitExit(ctx, name)
		if attempt == 0 {
			s.timing("container_" + name + "_exited_s")
		}
		s.container(name, func(cs *ContainerStatus) {
			cs.State, cs.ExitCode, cs.Reason, cs.Finished = "exited", code, reason, time.Now()
		})
		restart := policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0)
		if !restart || s.stopped() || s.agentDead() {
			return code
		}
		s.log.Info("restarting container", "container", name, "exit_code", code, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-s.stopping:
			return code
		case <-s.agentGone:
			return code
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// waitExit waits for the container to exit; once a stop is asked it sends
// SIGTERM, and SIGKILL to every process after the grace period.
func (s *shim) waitExit(ctx context.Context, name string) (int, string) {
	var termAt time.Time
	killed := false
	for {
		resp, err := s.cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: name, TimeoutMs: 250})
		if err != nil {
			if s.agentDead() {
				return 137, "AgentDied"
			}
			select {
			case <-s.agentGone:
				return 137, "AgentDied"
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if resp.GetExited() {
			return int(resp.GetExitCode()), resp.GetReason()
		}
		if !s.stopped() {
			continue
		}
		s.mu.Lock()
		grace := s.grace
		s.mu.Unlock()
		switch {
		case termAt.IsZero():
			termAt = time.Now()
			_, _ = s.cl.SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: name, Signal: int32(unix.SIGTERM)})
		case !killed && time.Since(termAt) >= grace:
			killed = true
			_, _ = s.cl.SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: name, Signal: int32(unix.SIGKILL), All: true})
		}
	}
}
