package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"cocoon.dev/cocoon/pod"
	"cocoon.dev/cocoon/tee"
	"cocoon.dev/cocoon/tee/sim"
)

// PolicyAnnotation carries the pod's policy (base64); its SHA-256 is the
// launch's HOST_DATA.
const PolicyAnnotation = "cocoon.dev/policy"

// PolicyHashAnnotation carries the policy's SHA-256 (informational).
const PolicyHashAnnotation = "cocoon.dev/policy-hash"

// PolicyText returns the pod's policy (the decoded annotation), or nil.
func PolicyText(p *pod.Pod) ([]byte, error) {
	v, ok := p.Annotations[PolicyAnnotation]
	if !ok {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("annotation %s is not base64: %w", PolicyAnnotation, err)
	}
	return b, nil
}

// HostData is the HOST_DATA a pod is launched with: SHA-256 of its policy,
// or zeros when it has none.
func HostData(p *pod.Pod) ([32]byte, error) {
	b, err := PolicyText(p)
	if err != nil || b == nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// SimMeasurement is the MEASUREMENT the simulated secure processor gives a
// process-backend launch of the agent binary whose digest (guest.FileDigest)
// is agentDigest.
func SimMeasurement(agentDigest string) [48]byte {
	return sim.Measure(sim.LaunchConfig{Isolation: "process", AgentDigest: agentDigest})
}

// startSim registers this launch (measured as m) with the simulated secure
// processor and serves it on ln, which only this sandbox's agent reaches.
func (s *shim) startSim(m [48]byte, ln net.Listener) error {
	auth, err := sim.LoadOrCreate(s.cfg.SimState)
	if err != nil {
		return fmt.Errorf("simulated secure processor: %w", err)
	}
	hd, err := HostData(s.pod)
	if err != nil {
		return err
	}
	l := sim.Launch{Measurement: m, HostData: hd}
	_, _ = rand.Read(l.ReportID[:])
	go func() { _ = sim.NewServer(auth, l).Serve(context.Background(), ln) }()
	s.update(func(st *Status) {
		st.TEE, st.Measurement, st.HostData = tee.Sim, hex.EncodeToString(m[:]), hex.EncodeToString(hd[:])
	})
	s.log.Info("simulated secure processor ready (INSECURE: development only)", "measurement", hex.EncodeToString(m[:]))
	return nil
}

// simSocket listens on the sandbox's simulated secure processor socket
// (process backend).
func (s *shim) simSocket() (net.Listener, error) {
	sock := filepath.Join(s.dir, fileSimSP)
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("simulated secure processor socket: %w", err)
	}
	return ln, nil
}
