package agent

import (
	"context"
	"sort"
	"time"

	"github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/image"
)

var runcDeleteForce = runc.DeleteOpts{Force: true}

type runcKillOpts = runc.KillOpts

func newProgress() *image.Progress { return &image.Progress{} }

func sortStatuses(s []*agentv1.ContainerStatus) {
	sort.Slice(s, func(i, j int) bool { return s[i].GetName() < s[j].GetName() })
}

// Close asks the agent to shut down: Serve kills every container, unmounts
// their rootfs and returns.
func (a *Agent) Close() {
	a.closeOnce.Do(func() { close(a.done) })
}

// cleanup kills and removes every container.
func (a *Agent) cleanup() {
	a.mu.Lock()
	cs := make([]*container, 0, len(a.containers))
	for _, c := range a.containers {
		cs = append(cs, c)
	}
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range cs {
		if st, done := c.status(); st == stateRunning {
			_ = a.runc.Kill(ctx, c.spec.GetName(), int(unix.SIGKILL), &runc.KillOpts{All: true})
			select {
			case <-done:
			case <-ctx.Done():
			}
		}
		a.remove(ctx, c)
	}
	a.closeEncrypted()
	a.stopPIDHolder()
	a.mu.Lock()
	for _, l := range a.logs {
		l.close()
	}
	a.mu.Unlock()
	a.cancel()
}
