package sandbox

import (
	"sort"
	"strings"
	"time"
)

// TraceEvent is one point of a launch's timeline.
type TraceEvent struct {
	// At is the time since the traced command started.
	At   time.Duration `json:"at"`
	What string        `json:"what"`
	// Agent are the steps the agent reported for this phase.
	Agent []AgentSpan `json:"agent,omitempty"`
}

// Trace lays a sandbox's timings out on the timeline of a command that
// started at start and returned at end (cocoon run --trace): when the launch
// began, each phase the runtime recorded, and the command's return.
func (st *Status) Trace(start, end time.Time) []TraceEvent {
	ev := []TraceEvent{{At: 0, What: "cocoon run started"}}
	if !st.LaunchedAt.IsZero() {
		ev = append(ev, TraceEvent{At: st.LaunchedAt.Sub(start), What: "launch began (runtime process up)"})
		for k, s := range st.Timings {
			ev = append(ev, TraceEvent{st.LaunchedAt.Sub(start) + time.Duration(s*float64(time.Second)), phaseName(k), st.AgentSpans[k]})
		}
	}
	if !end.IsZero() {
		ev = append(ev, TraceEvent{At: end.Sub(start), What: "pod ended (seen by cocoon run)"})
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].At < ev[j].At })
	return ev
}

// phaseName says what a recorded phase means.
func phaseName(k string) string {
	switch k {
	case "layer_disks_s":
		return "layer disks ready (built, or found in the node's cache)"
	case "vm_kernel_s":
		return "guest kernel booted (its init started)"
	case "agent_serving_s":
		return "agent process serving (started in its namespaces)"
	case "sim_ready_s":
		return "simulated secure processor ready (agent binary measured)"
	case "agent_ready_s":
		return "agent ready (sandbox started, agent serving)"
	case "sandbox_created_s":
		return "sandbox created (policy bound to the report and loaded)"
	case "images_ready_s":
		return "images pulled and verified"
	}
	if rest, ok := strings.CutPrefix(k, "container_"); ok {
		for suffix, what := range map[string]string{
			"_created_s": "created (policy decision, rootfs, OCI spec)",
			"_started_s": "started (runc run, until its process exists)",
			"_exited_s":  "exited (seen by the runtime)",
		} {
			if name, ok := strings.CutSuffix(rest, suffix); ok {
				return "container " + name + " " + what
			}
		}
	}
	return k
}
