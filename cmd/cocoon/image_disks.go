package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// newImageDisksCmd lists and prunes the node's cache of verified layer
// disks (docs/vm.md).
func newImageDisksCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "disks",
		Short: "List and prune the node's verified layer disks (VM sandboxes)",
		Long: `VM sandboxes take image layers from read-only disks the node builds once per
layer (squashfs with a dm-verity tree, opened in the guest against the root hash
the policy pins) and keeps under ROOT/layerdisks. Each sandbox holds the disks
it uses with a link of its own, so pruning never takes a disk from a sandbox:
it removes the cache's copy of disks no sandbox holds, and the next sandbox of
that image builds it again. See docs/vm.md.`,
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the layer disks: size, sandboxes holding each, last use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := g.Root().LayerDisks().List()
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LAYER\tSIZE\tSANDBOXES\tLAST USED")
			var total int64
			for _, e := range list {
				total += e.Bytes
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", e.DiffID, human(e.Bytes), e.Users, e.LastUsed.UTC().Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d disks, %s\n", len(list), human(total))
			return nil
		},
	}
	var unusedFor time.Duration
	prune := &cobra.Command{
		Use:   "prune [--unused-for DURATION]",
		Short: "Remove the layer disks no sandbox holds and none used recently",
		Example: `  cocoon image disks prune                    # unused for a week
  cocoon image disks prune --unused-for 0     # every disk no sandbox holds
  cocoon image disks prune -o json            # what was removed, for scripts`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if unusedFor < 0 {
				return fmt.Errorf("--unused-for %v: want 0 or more", unusedFor)
			}
			res, err := g.Root().LayerDisks().Prune(time.Now().Add(-unusedFor))
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), res)
			}
			for _, e := range res.Removed {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s (%s)\n", e.DiffID, human(e.Bytes))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d disks removed, %s freed; %d kept (held by a sandbox or used in the last %v)\n",
				len(res.Removed), human(res.FreedBytes), res.Kept, unusedFor)
			return nil
		},
	}
	prune.Flags().DurationVar(&unusedFor, "unused-for", 7*24*time.Hour, "remove disks last used longer ago than this (and held by no sandbox)")
	cmd.AddCommand(ls, prune)
	return cmd
}
