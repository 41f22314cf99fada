package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/kbs/protocol"
)

// newKBSKeyCmd: keys addressed as Azure Key Vault keys are (by name), for the
// in-pod Azure SKR API's /key/release. A key is a JWK with its private part,
// stored as the resource keyvault/keys/<name>, released under the same
// release policy as any resource.
func newKBSKeyCmd(g *globals, af *kbsAdminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Short: "Keys for the in-pod Azure SKR API (/key/release), addressed by name as in Azure Key Vault"}
	var kty string
	var size int
	create := &cobra.Command{
		Use:   "create NAME [--kty RSA|oct] [--size BITS]",
		Short: "Make a key in the broker and print its public part",
		Long: `Makes a key (RSA: 2048, 3072 or 4096 bits; oct: 256 bits) and stores it as
the resource kbs:///keyvault/keys/NAME. A pod whose policy turns on the SKR API
(annotation cocoon.dev/skr) releases it with
  POST http://127.0.0.1:8080/key/release {"maa_endpoint": ..., "akv_endpoint": "<broker host>", "kid": "NAME"}
The private part leaves the broker only encrypted to an attested TEE. The public
part of an RSA key is printed, to wrap data for the workload.`,
		Example: `  cocoon kbs key create db-key --state ./kbs
  cocoon kbs key create data-key --kty oct --state ./kbs -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if n, err := protocol.KeyVaultName(name); err != nil || n != name {
				return fmt.Errorf("key name %q: 1-127 letters, digits and dashes, as in Azure Key Vault", name)
			}
			a, err := af.admin()
			if err != nil {
				return err
			}
			var priv, pub jose.JSONWebKey
			switch kty {
			case "RSA", "RSA-HSM":
				if size != 2048 && size != 3072 && size != 4096 {
					return fmt.Errorf("--size %d: RSA keys are 2048, 3072 or 4096 bits", size)
				}
				k, err := rsa.GenerateKey(rand.Reader, size)
				if err != nil {
					return err
				}
				priv = jose.JSONWebKey{Key: k, KeyID: name, Algorithm: string(jose.RSA_OAEP_256), Use: "enc"}
				pub = priv.Public()
			case "oct", "oct-HSM":
				k := make([]byte, 32)
				if _, err := rand.Read(k); err != nil {
					return err
				}
				defer clear(k)
				priv = jose.JSONWebKey{Key: k, KeyID: name, Algorithm: string(jose.A256GCM)}
			default:
				return fmt.Errorf("--kty %q: RSA or oct", kty)
			}
			b, err := priv.MarshalJSON()
			if err != nil {
				return err
			}
			defer clear(b)
			if err := a.Put(cmd.Context(), protocol.KeyVaultRepo+"/"+protocol.KeyVaultType+"/"+name, b); err != nil {
				return err
			}
			out := map[string]any{"kid": name, "resource": "kbs:///keyvault/keys/" + name, "kty": kty}
			if pub.Key != nil {
				pb, _ := pub.MarshalJSON()
				out["public_jwk"] = json.RawMessage(pb)
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s key %s (kbs:///keyvault/keys/%s)\n", kty, name, name)
			if pub.Key != nil {
				pb, _ := pub.MarshalJSON()
				fmt.Fprintf(cmd.OutOrStdout(), "public key (JWK): %s\n", pb)
			}
			return nil
		},
	}
	create.Flags().StringVar(&kty, "kty", "RSA", "key type: RSA or oct")
	create.Flags().IntVar(&size, "size", 2048, "RSA key size in bits")
	af.add(create)
	cmd.AddCommand(create)
	return cmd
}
