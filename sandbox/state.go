// Package sandbox is the host side of cocoon: it launches a sandbox for an
// isolation backend (the "process" backend: cocoon-agent in fresh
// namespaces), runs the pod through the agent API, provides the sandbox's
// egress channel, and keeps the state other cocoon commands read.
package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"cocoon.dev/cocoon/internal/proc"
	"cocoon.dev/cocoon/tee"
)

// Phases of a sandbox, as in Kubernetes plus the runtime's own.
const (
	PhasePending   = "Pending"
	PhaseRunning   = "Running"
	PhaseSucceeded = "Succeeded"
	PhaseFailed    = "Failed"
	PhaseStopped   = "Stopped"
	// PhaseAgentDied: the agent exited without being asked; every container
	// of the sandbox is gone.
	PhaseAgentDied = "AgentDied"
	// PhaseUnknown: the runtime process (shim) is gone.
	PhaseUnknown = "Unknown"
)

// Terminal reports whether a phase is final for the pod's containers.
func Terminal(phase string) bool {
	switch phase {
	case PhaseSucceeded, PhaseFailed, PhaseStopped, PhaseAgentDied, PhaseUnknown:
		return true
	}
	return false
}

// ContainerStatus is a container's state as the runtime tracks it.
type ContainerStatus struct {
	Name     string    `json:"name"`
	Kind     string    `json:"kind"`
	Image    string    `json:"image"`
	Digest   string    `json:"digest,omitempty"`
	State    string    `json:"state"` // waiting, running, exited
	ExitCode int       `json:"exitCode"`
	Reason   string    `json:"reason,omitempty"`
	Restarts int       `json:"restarts"`
	Started  time.Time `json:"startedAt,omitzero"`
	Finished time.Time `json:"finishedAt,omitzero"`
}

// Status is the sandbox state written by the shim (status.json).
type Status struct {
	Name     string `json:"name"`
	Phase    string `json:"phase"`
	Message  string `json:"message,omitempty"`
	ExitCode int    `json:"exitCode"`
	ShimPID  int    `json:"shimPid"`
	AgentPID int    `json:"agentPid"`
	// ShimStart and AgentStart are the processes' start times and Boot the
	// boot they ran in: with the PIDs they name the processes across PID
	// reuse and reboots (internal/proc), so no signal reaches another.
	ShimStart  uint64 `json:"shimStart,omitempty"`
	AgentStart uint64 `json:"agentStart,omitempty"`
	Boot       string `json:"boot,omitempty"`
	Isolation  string `json:"isolation"`
	// TEE, Measurement and HostData describe the launch as the (simulated)
	// secure processor measured it.
	TEE         tee.Kind  `json:"tee,omitempty"`
	Measurement string    `json:"measurement,omitempty"`
	HostData    string    `json:"hostData,omitempty"`
	Created     time.Time `json:"createdAt"`
	// LaunchedAt is when the runtime process began the launch.
	LaunchedAt time.Time `json:"launchedAt,omitzero"`
	// Timings are phases in seconds since LaunchedAt: agent_ready_s,
	// sandbox_created_s (policy bound and loaded), images_ready_s, per
	// container container_NAME_created_s, _started_s and _exited_s, and
	// for VM sandboxes vm_kernel_s (the guest's uptime when its init
	// started). `cocoon run --trace` prints them.
	Timings map[string]float64 `json:"timings,omitempty"`
	// AgentSpans are the steps the agent reported for a phase (keyed as
	// Timings): what the agent did inside the request that ended it.
	AgentSpans map[string][]AgentSpan `json:"agentSpans,omitempty"`
	Containers []ContainerStatus      `json:"containers"`
}

// AgentSpan is a step the agent took and its duration in milliseconds.
type AgentSpan struct {
	Name string  `json:"name"`
	Ms   float64 `json:"ms"`
}

// Root is a runtime state directory: sandboxes/<name>/ for each sandbox and
// layers/ for the verified layer cache.
type Root string

// Dir is the directory of a sandbox.
func (r Root) Dir(name string) string { return filepath.Join(string(r), "sandboxes", name) }

// SimState is the default state directory of the simulated secure
// processor.
func (r Root) SimState() string { return filepath.Join(string(r), "sim") }

// GuestDir is the default VM guest image directory (cocoon guest build).
func (r Root) GuestDir() string { return filepath.Join(string(r), "guest") }

// Layers is the layer cache directory.
func (r Root) Layers() string { return filepath.Join(string(r), "layers") }

// Paths inside a sandbox directory.
const (
	fileStatus  = "status.json"
	filePod     = "pod.yaml"
	fileRequest = "request.json"
	fileAgentSk = "agent.sock"
	fileEgress  = "egress.sock"
	fileSimSP   = "sp.sock"
	fileShimLog = "shim.log"
	fileAgentLg = "agent.log"
	dirAgent    = "agent"
)

// AgentSocket is the agent API socket of a sandbox.
func (r Root) AgentSocket(name string) string { return filepath.Join(r.Dir(name), fileAgentSk) }

// ErrNotFound marks a sandbox that does not exist.
var ErrNotFound = errors.New("no such sandbox")

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Load reads a sandbox's status and corrects it when the shim is gone.
func (r Root) Load(name string) (*Status, error) {
	b, err := os.ReadFile(filepath.Join(r.Dir(name), fileStatus))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sandbox %q: %w (see `cocoon ps`)", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox %q: %w", name, err)
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("sandbox %q: corrupt status: %w", name, err)
	}
	if !Terminal(st.Phase) && !st.shim().Alive() {
		st.Phase = PhaseUnknown
		st.Message = fmt.Sprintf("the runtime process (pid %d) is gone; see %s", st.ShimPID, filepath.Join(r.Dir(name), fileShimLog))
	}
	return &st, nil
}

// List returns every sandbox's status, sorted by name.
func (r Root) List() ([]*Status, error) {
	ents, err := os.ReadDir(filepath.Join(string(r), "sandboxes"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Status
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		st, err := r.Load(e.Name())
		if err != nil {
			continue // being created or removed
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// shim and agent are the recorded processes of a sandbox.
func (st *Status) shim() proc.Identity {
	return proc.Identity{PID: st.ShimPID, Start: st.ShimStart, Boot: st.Boot}
}

func (st *Status) agent() proc.Identity {
	return proc.Identity{PID: st.AgentPID, Start: st.AgentStart, Boot: st.Boot}
}
