package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/imagecrypt"
	"cocoon.dev/cocoon/kbs/client"
)

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Encrypt images; list and prune the node's layer disks",
		Long: `Images whose layers are encrypted (ocicrypt's format, as skopeo, buildah and
Confidential Containers write it) are decrypted inside the sandbox with keys the
key broker releases only to attested workloads. See docs/images.md.

VM sandboxes take the layers of unencrypted images from verified read-only
disks the node caches: "cocoon image disks" lists and prunes them (docs/vm.md).`,
	}
	cmd.AddCommand(newImageEncryptCmd(g), newImageDisksCmd(g))
	return cmd
}

func newImageEncryptCmd(g *globals) *cobra.Command {
	af := &kbsAdminFlags{}
	var key string
	var recipients []string
	cmd := &cobra.Command{
		Use:   "encrypt SRC DST --key kbs:///repo/type/tag [--recipient jwe:PUB.pem]",
		Short: "Encrypt an image's layers, with the key in the key broker",
		Long: `Copy the image SRC (a registry reference) to DST with every layer encrypted under
a fresh key of its own (AES-256-CTR with HMAC-SHA256, ocicrypt's format). Each
layer key is wrapped:

  --key kbs:///repo/type/tag   under a 32-byte key the key broker holds at that
                               resource (created, random, if it does not exist;
                               reused if it does), in Confidential Containers'
                               provider.attestation-agent annotation: the agent
                               fetches it through its attested session;
  --recipient jwe:PUB.pem      for a JWE recipient as skopeo --encryption-key
                               does (repeatable): whoever holds the private key
                               (skopeo --decryption-key) can decrypt.

The broker is reached as by cocoon kbs put (--state DIR, or --kbs URL with
--admin-key and --ca). The plaintext is never written to disk here; the
ciphertext goes through 0600 temporary files.`,
		Example: `  cocoon image encrypt registry.example/app:1 registry.example/app:1-enc --key kbs:///app/image/key --state kbs-state
  cocoon image encrypt registry.example/app:1 registry.example/app:1-enc --recipient jwe:pub.pem`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			src, err := name.ParseReference(args[0])
			if err != nil {
				return fmt.Errorf("SRC %q: %w", args[0], err)
			}
			dst, err := name.ParseReference(args[1])
			if err != nil {
				return fmt.Errorf("DST %q: %w", args[1], err)
			}
			var w imagecrypt.Wrapping
			for _, r := range recipients {
				path, ok := strings.CutPrefix(r, "jwe:")
				if !ok {
					return fmt.Errorf("--recipient %q: only jwe:PUBLIC-KEY-FILE is supported", r)
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return fmt.Errorf("--recipient: %w", err)
				}
				w.Recipients = append(w.Recipients, b)
			}
			if key != "" {
				a, path, err := af.resource(key)
				if err != nil {
					return fmt.Errorf("--key: %w", err)
				}
				kek, err := a.Get(ctx, path)
				switch {
				case client.IsNotFound(err):
					kek = make([]byte, 32)
					if _, err := rand.Read(kek); err != nil {
						return err
					}
					if err := a.Put(ctx, path, kek); err != nil {
						return fmt.Errorf("--key: store the new key: %w", err)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "a new 32-byte key is stored at %s\n", key)
				case err != nil:
					return fmt.Errorf("--key: %w", err)
				case len(kek) != 32:
					clear(kek)
					return fmt.Errorf("--key: %s holds %d bytes, not a 32-byte key; name another resource", key, len(kek))
				default:
					fmt.Fprintf(cmd.ErrOrStderr(), "the key at %s is reused\n", key)
				}
				defer clear(kek)
				w.Kid, w.KEK = key, kek
			}
			if w.KEK == nil && len(w.Recipients) == 0 {
				return fmt.Errorf("give --key kbs:///repo/type/tag and/or --recipient jwe:PUB.pem")
			}
			opts := []remote.Option{remote.WithContext(ctx)}
			img, err := remote.Image(src, opts...)
			if err != nil {
				return fmt.Errorf("SRC: %w", err)
			}
			dir, err := os.MkdirTemp("", "cocoon-encrypt-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			enc, err := imagecrypt.EncryptImage(img, w, dir)
			if err != nil {
				return err
			}
			if err := remote.Write(dst, enc, opts...); err != nil {
				return fmt.Errorf("DST: %w", err)
			}
			d, err := enc.Digest()
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"image": dst.Context().Digest(d.String()).String(), "digest": d.String(), "key": key})
			}
			fmt.Fprintln(cmd.OutOrStdout(), dst.Context().Digest(d.String()).String())
			return nil
		},
	}
	af.add(cmd)
	cmd.Flags().StringVar(&key, "key", "", "key broker resource wrapping the layer keys: kbs:///repo/type/tag")
	cmd.Flags().StringArrayVar(&recipients, "recipient", nil, "JWE recipient: jwe:PUBLIC-KEY-FILE (PEM or JWK; repeatable)")
	return cmd
}
