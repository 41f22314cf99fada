package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/sealed"
)

// newKBSSealCmd prints the sealed secret that stands for a resource.
func newKBSSealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "seal kbs:///repo/type/tag",
		Short: "Print a sealed secret for a resource (a pod env value the agent replaces)",
		Long: `Print the sealed secret (Confidential Containers' format) that stands for a
key broker resource. Put it where a secret would go — a pod's env value, or a
Kubernetes Secret an env value comes from — and generate the policy: the host
and the control plane see only the reference; the agent replaces it with the
resource, released by the broker to the attested sandbox, when it creates the
container (the pod names the broker: cocoon.dev/kbs, cocoon.dev/kbs-ca).

  cocoon kbs put kbs:///app/db/password pw.txt --state kbs
  cocoon kbs seal kbs:///app/db/password
  # env: [{name: DB_PASSWORD, value: "sealed.eyJhbGciOiJub25lIn0.eyJ2..."}]

A container whose sealed secret is not released (the release policy refuses,
the broker is unreachable) is not created.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := sealed.Seal(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), v)
			return nil
		},
	}
}
