package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/kbs"
)

// newKBSAdminKeyCmd manages the broker's admin keys: several admins, each
// with a key of their own, added and removed without restarting anything
// (with --store postgres://..., where the keys live in the database).
func newKBSAdminKeyCmd(g *globals) *cobra.Command {
	af := &kbsAdminFlags{}
	cmd := &cobra.Command{
		Use:   "admin-key",
		Short: "Manage the admin keys (several admins; PostgreSQL store)",
		Long: `Admin requests carry a short-lived token signed by an admin key. cocoon kbs
init makes the first one (STATE/admin.key). With the PostgreSQL store the
public keys live in the database, authenticated under the master key, so every
replica honours a key added or removed through any of them at once:

  cocoon kbs admin-key generate alice.key          # alice: alice.key (0600), alice.key.pub
  cocoon kbs admin-key add alice alice.key.pub --state kbs    # an existing admin adds it
  cocoon kbs put kbs:///app/key/db v --kbs URL --admin-key alice.key --ca kbs/ca.pem
  cocoon kbs admin-key rm admin --state kbs        # retire the initial key
  cocoon kbs admin-key list --state kbs

The last key cannot be removed. With the embedded store the admin key is
STATE/admin.pub alone.`,
	}
	gen := &cobra.Command{
		Use: "generate KEYFILE", Short: "Write a new admin key pair (KEYFILE 0600, KEYFILE.pub)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kbs.GenerateAdminKey(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (keep it secret) and %s.pub (give it to an admin: cocoon kbs admin-key add NAME %s.pub)\n", args[0], args[0], args[0])
			return nil
		},
	}
	add := &cobra.Command{
		Use: "add NAME PUBFILE", Short: "Add an admin key (a PEM Ed25519 public key)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kbs.CheckAdminKeyName(args[0]); err != nil {
				return err
			}
			b, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			if _, err := kbs.ParseAdminPub(b); err != nil {
				return fmt.Errorf("%s: %w", args[1], err)
			}
			a, err := af.admin()
			if err != nil {
				return err
			}
			return a.AddAdminKey(cmd.Context(), args[0], string(b))
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove an admin key (not the last one)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := af.admin()
			if err != nil {
				return err
			}
			return a.RemoveAdminKey(cmd.Context(), args[0])
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List the admin keys", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := af.admin()
			if err != nil {
				return err
			}
			keys, err := a.AdminKeys(cmd.Context())
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), keys)
			}
			for _, k := range keys {
				pub, err := kbs.ParseAdminPub([]byte(k.PublicKey))
				if err != nil {
					return err
				}
				added := ""
				if !k.Added.IsZero() {
					added = k.Added.UTC().Format("2006-01-02T15:04:05Z")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\ted25519:%x\t%s\n", k.Name, []byte(pub), added)
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{add, rm, list} {
		af.add(c)
	}
	cmd.AddCommand(gen, add, rm, list)
	return cmd
}
