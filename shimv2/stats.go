package shimv2

import (
	"context"

	cgroupstats "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// Stats reports a container's usage as the agent measures it, in cgroup v2
// metrics (what the CRI decodes for `crictl stats`).
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(r.GetID())
	if err != nil {
		return nil, err
	}
	m := &cgroupstats.Metrics{}
	if !c.sandbox {
		inst, _, err := s.instance()
		if err != nil {
			return nil, err
		}
		st, err := inst.Client().Stats(ctx, &agentv1.StatsRequest{Container: c.name})
		if err != nil {
			return nil, agentErr("stats of container "+c.name, err)
		}
		m.CPU = &cgroupstats.CPUStat{UsageUsec: st.GetCpuUsageNs() / 1000}
		m.Memory = &cgroupstats.MemoryStat{Usage: st.GetMemoryBytes()}
		m.MemoryEvents = &cgroupstats.MemoryEvents{}
		m.Pids = &cgroupstats.PidsStat{Current: st.GetPids()}
	}
	a, err := typeurl.MarshalAnyToProto(m)
	if err != nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInternal, "encode stats: %v", err)
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}
