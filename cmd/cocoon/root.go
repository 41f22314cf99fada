package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/sandbox"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

type globals struct {
	outFile  string // policy generate -o FILE
	root     string
	simState string
	output   string
	agent    string
	runc     string
}

func (g *globals) Root() sandbox.Root { return sandbox.Root(g.root) }

// sim is the simulated secure processor's state directory.
func (g *globals) sim() string {
	if g.simState != "" {
		return g.simState
	}
	return g.Root().SimState()
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) check() error {
	if g.output != "text" && g.output != "json" {
		return fmt.Errorf("--output must be text or json, not %q", g.output)
	}
	return nil
}

// agentBinary finds cocoon-agent: --agent, next to this binary, then PATH.
func (g *globals) agentBinary() (string, error) {
	if g.agent != "" {
		return filepath.Abs(g.agent)
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "cocoon-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("cocoon-agent")
	if err != nil {
		return "", fmt.Errorf("cocoon-agent not found next to cocoon or on PATH; build it (go build ./cmd/cocoon-agent) or pass --agent")
	}
	return filepath.Abs(p)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	defRoot := os.Getenv("COCOON_ROOT")
	if defRoot == "" {
		defRoot = "/var/lib/cocoon"
	}
	cmd := &cobra.Command{
		Use:   "cocoon",
		Short: "Run unmodified OCI containers in confidential sandboxes",
		Long: `cocoon runs standard OCI container images, described by a Kubernetes pod spec,
inside a sandbox whose only door to the host is the cocoon agent's API. The agent
pulls and verifies images itself and runs the containers with runc.

Isolation backends: process (namespaces; development only, no memory
encryption) and qemu (a VM per sandbox: SEV-SNP or TDX where the host has
them, else a plain VM with the simulated TEE; software emulation without KVM).

Examples:
  cocoon run examples/hello/pod.yaml      run a pod in the foreground
  cocoon run -d pod.yaml                  run detached, print the pod name
  cocoon ps                               list sandboxes
  cocoon logs hello -c client             print a container's output
  cocoon exec hello -c server -- ls /     run a command in a container
  cocoon rm hello                         stop and remove a sandbox`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(c *cobra.Command, _ []string) error {
			if c.Name() == "generate" && g.output != "text" && g.output != "json" {
				// cocoon policy generate -o FILE: -o names the output file.
				g.outFile, g.output = g.output, "text"
			}
			return g.check()
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.root, "root", defRoot, "runtime state directory (env COCOON_ROOT)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&g.agent, "agent", "", "cocoon-agent binary (default: next to cocoon, then PATH)")
	pf.StringVar(&g.runc, "runc", "", "runc binary used inside the sandbox (default: runc on PATH)")
	pf.StringVar(&g.simState, "sim-state", os.Getenv("COCOON_SIM_STATE"), "state of the simulated secure processor (default: ROOT/sim; env COCOON_SIM_STATE)")
	cmd.AddCommand(newRunCmd(g), newPsCmd(g), newLogsCmd(g), newExecCmd(g), newStopCmd(g),
		newRmCmd(g), newVersionCmd(g), newShimCmd(), newAttestCmd(g), newVerifyCmd(g), newMeasureCmd(g), newPolicyCmd(g), newASCmd(g), newTokenCmd(g), newKBSCmd(g), newVolumeCmd(g), newGuestCmd(g), newInstallCmd(g), newImageCmd(g))
	return cmd
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the cocoon version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": Version})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "cocoon", Version)
			return nil
		},
	}
}

func newShimCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "shim DIR",
		Short:  "Run a sandbox's runtime process (internal)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return sandbox.RunShim(args[0], os.NewFile(3, "ready"))
		},
	}
}
