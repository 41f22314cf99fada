package sandbox

import (
	"testing"
	"time"
)

func TestTrace(t *testing.T) {
	start := time.Unix(1000, 0)
	st := &Status{LaunchedAt: start.Add(30 * time.Millisecond), Timings: map[string]float64{
		"images_ready_s": 0.060, "agent_ready_s": 0.045, "container_app_started_s": 0.200,
		"container_app_created_s": 0.120, "sandbox_created_s": 0.050, "container_app_exited_s": 0.205,
		"agent_serving_s": 0.040, "sim_ready_s": 0.044, "layer_disks_s": 0.010,
	}, AgentSpans: map[string][]AgentSpan{"container_app_started_s": {{Name: "runc run", Ms: 70}}}}
	ev := st.Trace(start, start.Add(240*time.Millisecond))
	want := []TraceEvent{
		{At: 0, What: "cocoon run started"},
		{At: 30 * time.Millisecond, What: "launch began (runtime process up)"},
		{At: 40 * time.Millisecond, What: "layer disks ready (built, or found in the node's cache)"},
		{At: 70 * time.Millisecond, What: "agent process serving (started in its namespaces)"},
		{At: 74 * time.Millisecond, What: "simulated secure processor ready (agent binary measured)"},
		{At: 75 * time.Millisecond, What: "agent ready (sandbox started, agent serving)"},
		{At: 80 * time.Millisecond, What: "sandbox created (policy bound to the report and loaded)"},
		{At: 90 * time.Millisecond, What: "images pulled and verified"},
		{At: 150 * time.Millisecond, What: "container app created (policy decision, rootfs, OCI spec)"},
		{At: 230 * time.Millisecond, What: "container app started (runc run, until its process exists)", Agent: []AgentSpan{{Name: "runc run", Ms: 70}}},
		{At: 235 * time.Millisecond, What: "container app exited (seen by the runtime)"},
		{At: 240 * time.Millisecond, What: "pod ended (seen by cocoon run)"},
	}
	if len(ev) != len(want) {
		t.Fatalf("events %v", ev)
	}
	for i := range want {
		if d := ev[i].At - want[i].At; d < -time.Microsecond || d > time.Microsecond || ev[i].What != want[i].What || len(ev[i].Agent) != len(want[i].Agent) {
			t.Errorf("event %d: %v, want %v", i, ev[i], want[i])
		}
	}
	// Without a launch time there is nothing to lay out but the command.
	if ev := (&Status{}).Trace(start, time.Time{}); len(ev) != 1 {
		t.Errorf("no launch: %v", ev)
	}
}
