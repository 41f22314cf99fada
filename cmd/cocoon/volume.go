package main

import (
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/volume"
	"cocoon.dev/cocoon/volume/hostmount"
)

func readKeyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("--key-file FILE is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(b) == 0 {
		return nil, errors.New("the key file is empty")
	}
	return b, nil
}

func newVolumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Encrypted volumes (LUKS2): create, open, close, inspect",
		Long: `LUKS2 encrypted volumes (aes-xts-plain64, 512-bit key, 4096-byte sectors,
argon2id), interoperable with cryptsetup. Inside a sandbox the key comes from the
key broker; outside, from a key file. Where the kernel lacks dm-crypt, volumes
open through a userspace path: cocoon decrypts sectors itself and exposes the
plaintext block device as a FUSE file, with a loop device and the filesystem on it.`,
	}
	var (
		size, fsType, keyFile, from, kdf, kbsRes, kbsState string
		readOnly                                           bool
	)
	create := &cobra.Command{
		Use:   "create --size SIZE --fs ext4 (--key-file F | --kbs-resource kbs:///r/t/t --state DIR) [--from DIR] IMAGE",
		Short: "Create an encrypted volume holding an ext4 filesystem",
		Long: `Create IMAGE: a LUKS2 header whose keyslot opens with the key file's bytes, and
an ext4 filesystem inside, populated from --from DIR. With --kbs-resource, a random
key is made and stored in the key broker at that resource (--state is the broker's
state directory) instead of a key file.`,
		Example: `  cocoon volume create --size 64M --fs ext4 --key-file key.bin --from ./data data.img`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := volume.ParseSize(size)
			if err != nil {
				return err
			}
			var pass []byte
			switch {
			case kbsRes != "":
				a, path, err := (&kbsAdminFlags{state: kbsState}).resource(kbsRes)
				if err != nil {
					return err
				}
				pass = make([]byte, 32)
				if _, err := io.ReadFull(cryptorand.Reader, pass); err != nil {
					return err
				}
				if err := a.Put(cmd.Context(), path, pass); err != nil {
					return fmt.Errorf("store the key in the broker: %w", err)
				}
			default:
				if pass, err = readKeyFile(keyFile); err != nil {
					return err
				}
			}
			defer clear(pass)
			start := time.Now()
			if err := volume.Create(cmd.Context(), args[0], volume.CreateOptions{Size: n, FS: fsType, Passphrase: pass, KDF: kdf, FromDir: from}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created %s (%s, LUKS2 aes-xts-plain64) in %v\n", args[0], size, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	create.Flags().StringVar(&size, "size", "", "size of the filesystem (e.g. 64M, 1G)")
	create.Flags().StringVar(&fsType, "fs", "ext4", "filesystem (ext4)")
	create.Flags().StringVar(&keyFile, "key-file", "", "the key: this file's bytes are the passphrase")
	create.Flags().StringVar(&from, "from", "", "populate the filesystem from this directory")
	create.Flags().StringVar(&kdf, "kdf", "argon2id", "keyslot KDF: argon2id or pbkdf2")
	create.Flags().StringVar(&kbsRes, "kbs-resource", "", "make a random key and store it in the key broker at kbs:///repo/type/tag")
	create.Flags().StringVar(&kbsState, "state", "", "the key broker's state directory (with --kbs-resource)")

	open := &cobra.Command{
		Use:   "open --key-file F IMAGE MOUNTPOINT [--read-only]",
		Short: "Open a volume and mount its filesystem (outside a pod)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readKeyFile(keyFile)
			if err != nil {
				return err
			}
			defer clear(pass)
			return openVolume(g, args[0], args[1], pass, readOnly)
		},
	}
	open.Flags().StringVar(&keyFile, "key-file", "", "the key file")
	open.Flags().BoolVar(&readOnly, "read-only", false, "open read-only")
	closeCmd := &cobra.Command{
		Use:   "close MOUNTPOINT",
		Short: "Unmount, detach and forget the key of an opened volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return hostmount.Close(g.root, args[0])
		},
	}
	inspect := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Show a volume's header facts (no secrets)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := volume.Inspect(args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), in)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "LUKS2 %s\n  uuid        %s\n  cipher      %s, %d-byte sectors\n  data        %d bytes at offset %d\n  header      %d bytes, seqid %d", args[0], in.UUID, in.Cipher, in.SectorSize, in.DataSize, in.DataOffset, in.HeaderSize, in.SeqID)
			if in.Recovered {
				fmt.Fprint(cmd.OutOrStdout(), " (recovered from the secondary copy)")
			}
			fmt.Fprintln(cmd.OutOrStdout())
			for _, k := range in.Keyslots {
				fmt.Fprintf(cmd.OutOrStdout(), "  keyslot %s   %d-bit key, %s (%s)\n", k.ID, k.KeySize, k.KDF, k.Params)
			}
			return nil
		},
	}
	serve := &cobra.Command{
		Use: "serve IMAGE FUSEDIR TARGET", Hidden: true, Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
			if err != nil {
				return err
			}
			dev, _, err := volume.Open(args[0], pass, readOnly)
			clear(pass)
			if err != nil {
				fmt.Println("error:", err)
				return err
			}
			u, err := volume.OpenUserspace(dev, args[1], args[2])
			if err != nil {
				fmt.Println("error:", err)
				return err
			}
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			fmt.Println("ready")
			<-sigs
			return u.Close()
		},
	}
	serve.Flags().BoolVar(&readOnly, "read-only", false, "")
	cmd.AddCommand(create, open, closeCmd, inspect, serve)
	return cmd
}

// openVolume starts the volume server (`cocoon volume serve`, which holds
// the key and serves FUSE) and records it so `cocoon volume close` finds it.
func openVolume(g *globals, image, target string, pass []byte, readOnly bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return hostmount.Open(g.root, image, target, pass, func(fuseDir, abs string) *exec.Cmd {
		args := []string{"--root", g.root, "volume", "serve", image, fuseDir, abs}
		if readOnly {
			args = append(args, "--read-only")
		}
		return exec.Command(self, args...)
	})
}
