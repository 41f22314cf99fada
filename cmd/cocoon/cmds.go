package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/sandbox"
)

func newPsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ps",
		Short: "List sandboxes and their containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := g.Root().List()
			if err != nil {
				return err
			}
			if g.json() {
				if list == nil {
					list = []*sandbox.Status{}
				}
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPHASE\tISOLATION\tCONTAINERS\tAGE\tMESSAGE")
			for _, s := range list {
				var cs []string
				for _, c := range s.Containers {
					desc := c.Name + ":" + c.State
					if c.State == "exited" {
						desc += fmt.Sprintf("(%d)", c.ExitCode)
					}
					if c.Restarts > 0 {
						desc += fmt.Sprintf("[%d restarts]", c.Restarts)
					}
					cs = append(cs, desc)
				}
				iso := s.Isolation
				if s.TEE != "" {
					iso += "/" + string(s.TEE) // e.g. qemu/sim: a VM with the simulated TEE
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Phase, iso, strings.Join(cs, " "),
					time.Since(s.Created).Round(time.Second), s.Message)
			}
			return tw.Flush()
		},
	}
}

// pickContainer returns the -c container or the pod's only/first main one.
func pickContainer(g *globals, podName, c string) (string, error) {
	if c != "" {
		return c, nil
	}
	st, err := g.Root().Load(podName)
	if err != nil {
		return "", err
	}
	var mains []string
	for _, cs := range st.Containers {
		if cs.Kind == "main" {
			mains = append(mains, cs.Name)
		}
	}
	if len(mains) == 0 {
		return "", fmt.Errorf("pod %s has no containers", podName)
	}
	if len(mains) > 1 {
		return "", fmt.Errorf("pod %s has several containers (%s); choose one with -c", podName, strings.Join(mains, ", "))
	}
	return mains[0], nil
}

func newLogsCmd(g *globals) *cobra.Command {
	var container string
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs POD [-c CONTAINER] [-f]",
		Short: "Print a container's output (stdout and stderr)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := pickContainer(g, args[0], container)
			if err != nil {
				return err
			}
			cl, err := g.Root().Dial(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer cl.Close()
			return copyLogs(cmd.Context(), cl, name, follow, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container name (default: the pod's only container)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the container exits")
	return cmd
}

func copyLogs(ctx context.Context, cl *sandbox.Client, name string, follow bool, w io.Writer) error {
	var off int64
	for {
		wait := int32(0)
		if follow {
			wait = 1000
		}
		resp, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: name, Offset: off, WaitMs: wait})
		if err != nil {
			return fmt.Errorf("logs of %s: %s", name, sandbox.Message(err))
		}
		if _, err := w.Write(resp.GetData()); err != nil {
			return err
		}
		off = resp.GetNextOffset()
		if len(resp.GetData()) == 0 && (!follow || resp.GetEof()) {
			return nil
		}
	}
}

func newExecCmd(g *globals) *cobra.Command {
	var container string
	var timeout time.Duration
	var stdin bool
	cmd := &cobra.Command{
		Use:   "exec POD [-c CONTAINER] -- CMD [ARG...]",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container and print its output. The command's exit
code becomes cocoon's. With -i, cocoon's standard input is read to the end and
given to the command. Interactive terminals are not supported.`,
		Example: `  cocoon exec hello -c server -- cat /etc/hostname`,
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("put the command after --: cocoon exec POD -- CMD")
			}
			name, err := pickContainer(g, args[0], container)
			if err != nil {
				return err
			}
			var in []byte
			if stdin {
				if in, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20)); err != nil {
					return err
				}
			}
			cl, err := g.Root().Dial(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer cl.Close()
			resp, err := cl.ExecProcess(cmd.Context(), &agentv1.ExecProcessRequest{
				Container: name, Args: args[1:], Stdin: in, TimeoutSeconds: int32(timeout.Seconds()),
			})
			if err != nil {
				return &exitError{126, fmt.Sprintf("exec in %s/%s: %s", args[0], name, sandbox.Message(err))}
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]any{
					"exitCode": resp.GetExitCode(), "stdout": string(resp.GetStdout()), "stderr": string(resp.GetStderr()),
				})
			}
			cmd.OutOrStdout().Write(resp.GetStdout())
			cmd.ErrOrStderr().Write(resp.GetStderr())
			if resp.GetExitCode() != 0 {
				return &exitError{int(resp.GetExitCode()), ""}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&container, "container", "c", "", "container name (default: the pod's only container)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "kill the command after this long")
	cmd.Flags().BoolVarP(&stdin, "stdin", "i", false, "pass standard input to the command")
	return cmd
}

func newStopCmd(g *globals) *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "stop POD",
		Short: "Stop a pod's containers (SIGTERM, then SIGKILL after -t)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), grace+30*time.Second)
			defer cancel()
			st, err := g.Root().Stop(ctx, args[0], grace)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), st)
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
	cmd.Flags().DurationVarP(&grace, "time", "t", 10*time.Second, "grace period before SIGKILL")
	return cmd
}

func newRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm POD...",
		Short: "Remove sandboxes (stopping them first), with every mount and file",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			grace := 10 * time.Second
			if force {
				grace = 0
			}
			var failed []string
			for _, name := range args {
				ctx, cancel := context.WithTimeout(cmd.Context(), grace+30*time.Second)
				err := g.Root().Remove(ctx, name, grace)
				cancel()
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "cocoon:", err)
					failed = append(failed, name)
					continue
				}
				if !g.json() {
					fmt.Fprintln(cmd.OutOrStdout(), name)
				}
			}
			if len(failed) > 0 {
				return &exitError{1, ""}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill containers without a grace period")
	return cmd
}
