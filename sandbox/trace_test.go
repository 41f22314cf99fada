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
		"agent_serving_s": 0.040, "sim_ready_s": 0.044,
	}}
	ev := st.Trace(start, start.Add(240*time.Millisecond))
	want := []TraceEvent{
		{0, "cocoon run started"},
		{30 * time.Millisecond, "launch began (runtime process up)"},
		{70 * time.Millisecond, "agent process serving (started in its namespaces)"},
		{74 * time.Millisecond, "simulated secure processor ready (agent binary measured)"},
		{75 * time.Millisecond, "agent ready (sandbox started, agent serving)"},
		{80 * time.Millisecond, "sandbox created (policy bound to the report and loaded)"},
		{90 * time.Millisecond, "images pulled and verified"},
		{150 * time.Millisecond, "container app created (policy decision, rootfs, OCI spec)"},
		{230 * time.Millisecond, "container app started (runc run, until its process exists)"},
		{235 * time.Millisecond, "container app exited (seen by the runtime)"},
		{240 * time.Millisecond, "pod ended (seen by cocoon run)"},
	}
	if len(ev) != len(want) {
		t.Fatalf("events %v", ev)
	}
	for i := range want {
		if d := ev[i].At - want[i].At; d < -time.Microsecond || d > time.Microsecond || ev[i].What != want[i].What {
			t.Errorf("event %d: %v, want %v", i, ev[i], want[i])
		}
	}
	// Without a launch time there is nothing to lay out but the command.
	if ev := (&Status{}).Trace(start, time.Time{}); len(ev) != 1 {
		t.Errorf("no launch: %v", ev)
	}
}
