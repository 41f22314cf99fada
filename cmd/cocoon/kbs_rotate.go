package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/kbs"
)

// The files of a master-key rotation, beside master.key: the next key
// (readable, before it seals) and the previous one (readable, until the
// reseal is done).
const (
	fileMasterNext = kbs.FileMasterKey + ".next"
	fileMasterOld  = kbs.FileMasterKey + ".old"
)

// readableKeys are the rotation's other keys present in state.
func readableKeys(state string) ([][]byte, error) {
	var out [][]byte
	for _, f := range []string{fileMasterNext, fileMasterOld} {
		b, err := os.ReadFile(filepath.Join(state, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(b) != 32 {
			return nil, fmt.Errorf("%s is %d bytes; a master key is 32", f, len(b))
		}
		out = append(out, b)
	}
	return out, nil
}

func newKBSRotateCmd() *cobra.Command {
	var prepare, commit, finish bool
	var state string
	c := &cobra.Command{
		Use:   "rotate-master --state DIR --prepare|--commit|--finish",
		Short: "Rotate the master key that seals every stored resource, in three steps",
		Long: `Rotate the broker's master key without a moment when a resource cannot be
read, by any replica. Each step changes the state directory; give every replica
the new state (a Secret update) and restart them one by one before the next.

  --prepare   make the next key (master.key.next): replicas can open values
              sealed under it, and still seal under the current one
  --commit    the next key becomes master.key, the previous one master.key.old:
              replicas seal under the new key and still open the old
  (then)      cocoon kbs reseal: every value, and the release policy's MAC,
              sealed again under the new key (resumable; run it again at will)
  --finish    remove master.key.old once the reseal reported nothing left

A broker started from a state with master.key.next or master.key.old opens
values under those keys too; it never seals with them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state == "" {
				return errors.New("--state DIR is required")
			}
			cur, next, old := filepath.Join(state, kbs.FileMasterKey), filepath.Join(state, fileMasterNext), filepath.Join(state, fileMasterOld)
			exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
			switch {
			case prepare && !commit && !finish:
				if exists(next) || exists(old) {
					return errors.New("a rotation is already under way (master.key.next or master.key.old exists): --commit or --finish it")
				}
				k := make([]byte, 32)
				if _, err := rand.Read(k); err != nil {
					return err
				}
				if err := os.WriteFile(next, k, 0o600); err != nil {
					return err
				}
				clear(k)
				fmt.Fprintln(cmd.OutOrStdout(), "prepared: master.key.next; give every replica this state and restart them, then --commit")
			case commit && !prepare && !finish:
				if !exists(next) {
					return errors.New("nothing to commit: run --prepare first")
				}
				if exists(old) {
					return errors.New("master.key.old exists: --finish the previous rotation first")
				}
				if err := os.Rename(cur, old); err != nil {
					return err
				}
				if err := os.Rename(next, cur); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "committed: master.key is the new key, master.key.old the previous; give every replica this state, restart them, then cocoon kbs reseal")
			case finish && !prepare && !commit:
				if !exists(old) {
					return errors.New("nothing to finish: no master.key.old")
				}
				if err := os.Remove(old); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "finished: master.key.old removed; give every replica this state and restart them")
			default:
				return errors.New("give exactly one of --prepare, --commit, --finish")
			}
			return nil
		},
	}
	c.Flags().StringVar(&state, "state", "", "the broker's state directory")
	c.Flags().BoolVar(&prepare, "prepare", false, "make the next key, readable")
	c.Flags().BoolVar(&commit, "commit", false, "seal under the next key; the current one stays readable")
	c.Flags().BoolVar(&finish, "finish", false, "drop the previous key (after cocoon kbs reseal)")
	return c
}
