package main

import (
	"testing"

	"cocoon.dev/cocoon/internal/deptest"
)

// TCBForbidden are packages the TEE's binaries must never link: Kubernetes
// types, the host runtime, the CLI, the guest image builder, the policy
// generator, the key broker's and attestation service's servers and their
// stores. docs/architecture.md lists what the agent does link and why.
var TCBForbidden = []string{
	"k8s.io", "sigs.k8s.io",
	"github.com/spf13/cobra", "github.com/spf13/pflag",
	"go.etcd.io/bbolt",
	"github.com/open-policy-agent/opa", // the framework is evaluated natively (policy/native.go)
	"cocoon.dev/cocoon/internal/regoval",
	"cocoon.dev/cocoon/policy/rego",
	"cocoon.dev/cocoon/cmd/cocoon",
	"cocoon.dev/cocoon/sandbox",
	"cocoon.dev/cocoon/pod",
	"cocoon.dev/cocoon/policygen",
	"cocoon.dev/cocoon/guest",
	"cocoon.dev/cocoon/kbs", // the broker; kbs/client and kbs/protocol are allowed below
	"cocoon.dev/cocoon/as",
	"cocoon.dev/cocoon/attest",
	"cocoon.dev/cocoon/token",
	"cocoon.dev/cocoon/internal/testimage",
	"cocoon.dev/cocoon/internal/deptest",
	"cocoon.dev/cocoon/internal/proc",
	"cocoon.dev/cocoon/volume/hostmount",
	"cocoon.dev/cocoon/shimv2", // the containerd runtime
	"github.com/containerd/containerd/v2",
	"github.com/containerd/containerd/api",
	"github.com/pelletier/go-toml",
}

// TCBAllowed are the parts of forbidden trees the agent needs: the key
// broker's client and wire types (not its server or store), and the wire
// types of the attestation service's MAA-compatible route (the in-pod SKR
// API's /attest/maa), a leaf of the standard library only; and klog, the
// logging library (not Kubernetes types) through which sigstore-go's
// certificate-transparency dependency logs.
var TCBAllowed = []string{"cocoon.dev/cocoon/kbs/client", "cocoon.dev/cocoon/kbs/protocol", "cocoon.dev/cocoon/as/maa", "k8s.io/klog/v2"}

func TestAgentDeps(t *testing.T) {
	deptest.Forbid(t, "cocoon.dev/cocoon/cmd/cocoon-agent", TCBForbidden, TCBAllowed)
}

func TestInitDeps(t *testing.T) {
	deptest.Forbid(t, "cocoon.dev/cocoon/cmd/cocoon-init", TCBForbidden, nil)
}
