package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/install"
)

func newInstallCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install cocoon's runtime into a container engine on this node",
	}
	cmd.AddCommand(newInstallContainerdCmd(g))
	return cmd
}

func newInstallContainerdCmd(g *globals) *cobra.Command {
	var (
		config, binDir, handler, isolation, tee, defaultPolicy, registries, hostRoot string
		noBinaries                                                                   bool
	)
	cmd := &cobra.Command{
		Use:   "containerd [--config FILE]",
		Short: "Add the cocoon runtime handler to containerd (2.x) and install the shim",
		Long: `Install containerd-shim-cocoon-v2 and cocoon-agent (from beside this cocoon) into
--bin-dir, and add a runtime handler to containerd's configuration:

  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.cocoon]
    runtime_type = 'io.containerd.cocoon.v2'
    runtime_path = '<bin-dir>/containerd-shim-cocoon-v2'
    pod_annotations = ['cocoon.dev/*']      # how a pod's policy reaches the runtime

The handler is written between BEGIN/END markers: running the command again
updates that block and nothing else; the rest of the file is kept as it is,
and a backup (FILE.bak-<time>) is written before any change. A configuration
that already declares the handler by hand is refused. containerd reads its
configuration at start: restart it afterwards (systemctl restart containerd).

Pods select the runtime with a RuntimeClass whose handler is --handler
(deploy/runtimeclass.yaml).`,
		Example: `  cocoon install containerd
  cocoon install containerd --config /etc/containerd/config.toml --isolation qemu
  cocoon install containerd --handler cocoon-test --default-policy /etc/cocoon/allow-all.rego  # for critest only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			shim := filepath.Join(binDir, "containerd-shim-cocoon-v2")
			agent := filepath.Join(binDir, "cocoon-agent")
			if !noBinaries {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				for _, b := range []string{"containerd-shim-cocoon-v2", "cocoon-agent"} {
					src := filepath.Join(filepath.Dir(self), b)
					if _, err := os.Stat(src); err != nil {
						return fmt.Errorf("%s is not beside cocoon (%s): build it (go build ./cmd/%s) or pass --no-binaries if it is installed already", b, src, b)
					}
					if err := os.MkdirAll(filepath.Join(hostRoot, binDir), 0o755); err != nil {
						return err
					}
					if err := install.CopyFile(src, filepath.Join(hostRoot, binDir, b)); err != nil {
						return fmt.Errorf("install %s: %w", b, err)
					}
				}
			}
			switch isolation {
			case "process", "qemu":
			default:
				return fmt.Errorf("--isolation %q: want process or qemu", isolation)
			}
			h := install.Handler{Name: handler, ShimPath: shim, Options: [][2]string{
				{"root", g.root}, {"isolation", isolation}, {"agent", agent},
			}}
			if tee != "" {
				h.Options = append(h.Options, [2]string{"tee", tee})
			}
			if g.runc != "" {
				h.Options = append(h.Options, [2]string{"runc", g.runc})
			}
			if registries != "" {
				h.Options = append(h.Options, [2]string{"registry_config_path", registries})
			}
			if defaultPolicy != "" {
				if _, err := os.Stat(filepath.Join(hostRoot, defaultPolicy)); err != nil {
					return fmt.Errorf("--default-policy: %w", err)
				}
				h.Options = append(h.Options, [2]string{"default_policy", defaultPolicy})
			}
			res, err := install.Containerd(filepath.Join(hostRoot, config), h, time.Now())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), res)
			}
			out := cmd.OutOrStdout()
			if !res.Changed {
				fmt.Fprintf(out, "%s already has the cocoon runtime handler %q as given: nothing changed\n", config, handler)
				return nil
			}
			fmt.Fprintf(out, "added the cocoon runtime handler %q to %s", handler, config)
			if res.Backup != "" {
				fmt.Fprintf(out, " (backup: %s)", res.Backup)
			}
			fmt.Fprintln(out)
			fmt.Fprintln(out, "restart containerd to load it (systemctl restart containerd), then apply deploy/runtimeclass.yaml")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&config, "config", "/etc/containerd/config.toml", "containerd's configuration file (created if missing)")
	f.StringVar(&binDir, "bin-dir", "/usr/local/bin", "where the shim and the agent are installed")
	f.StringVar(&handler, "handler", "cocoon", "runtime handler name (the RuntimeClass's handler)")
	f.StringVar(&isolation, "isolation", "process", "isolation backend of the node's pods: process or qemu")
	f.StringVar(&tee, "tee", "", "TEE of qemu sandboxes: snp, tdx or sim (default: the host's, else sim)")
	f.StringVar(&registries, "registry-config-path", "", "containerd's registry host directory (e.g. /etc/containerd/certs.d): the agent pulls through the same mirrors")
	f.StringVar(&defaultPolicy, "default-policy", "", "policy for pods without a cocoon.dev/policy annotation (INSECURE with an allow-all policy; for conformance tests)")
	f.BoolVar(&noBinaries, "no-binaries", false, "only edit the configuration (the binaries are installed already)")
	f.StringVar(&hostRoot, "host-root", "", "the node's root is mounted here (an installer container): files go under it, the configuration names the node's paths")
	return cmd
}
