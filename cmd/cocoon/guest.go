package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"cocoon.dev/cocoon/guest"
)

func newGuestCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "guest",
		Short: "Build the VM guest image of the qemu isolation backend",
	}
	var o guest.Options
	var modules []string
	build := &cobra.Command{
		Use:   "build [--kernel FILE] [--out DIR]",
		Short: "Build the guest kernel + initramfs pair and print its digests",
		Long: `Build the guest image VM sandboxes boot (--isolation qemu): the kernel (by
default Debian's linux-image-cloud-amd64 from /boot), an initramfs with
cocoon-init (static, as /init) and the kernel modules the guest loads (virtio,
overlay, loop, FUSE, dm-crypt, dm-verity, squashfs, vsock), and a read-only
root filesystem (squashfs + dm-verity tree; the initramfs names its root hash)
with cocoon-agent, runc and the shared libraries it needs, and busybox.
cocoon-init is taken from next to cocoon-agent. Needs mksquashfs
(squashfs-tools).

The build is reproducible: the same inputs give the same bytes, so the
digests it prints (and the launch measurement of 'cocoon measure --tee sim
--isolation qemu') can be recomputed by anyone with the same inputs.

'cocoon run --isolation qemu' builds the image itself when it is missing or
was built from another cocoon-agent.`,
		Example: `  cocoon guest build
  cocoon guest build --kernel /boot/vmlinuz-6.1.0-57-cloud-amd64 --out /tmp/guest -o json
  cocoon guest build --kernel guest-kernel/bzImage --modules none   # scripts/guest-kernel.sh`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			agentBin, err := g.agentBinary()
			if err != nil {
				return err
			}
			o.Agent = agentBin
			if o.Out == "" {
				o.Out = g.Root().GuestDir()
			}
			switch {
			case len(modules) == 1 && modules[0] == "none":
				o.Modules = []string{} // a kernel with everything built in
			case modules != nil:
				o.Modules = modules
			}
			start := time.Now()
			img, err := guest.Build(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), img)
			}
			printGuest(cmd.OutOrStdout(), img)
			fmt.Fprintf(cmd.ErrOrStderr(), "built in %s\n", time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := build.Flags()
	f.StringVar(&o.Kernel, "kernel", "", "guest kernel (default: newest /boot/vmlinuz-*-cloud-amd64)")
	f.StringVar(&o.ModulesDir, "modules-dir", "", "the kernel's modules (default: /lib/modules/<release from the kernel's name>)")
	f.StringVar(&o.Runc, "runc-binary", "", "runc to put in the guest (default: runc on PATH)")
	f.StringVar(&o.Busybox, "busybox", "", "static busybox (default: /bin/busybox)")
	f.StringVar(&o.Out, "out", "", "output directory (default: ROOT/guest)")
	f.StringSliceVar(&modules, "modules", nil, "kernel modules to load at boot (default: virtio, overlay, loop, fuse, dm-crypt, vsock; \"none\" for a kernel with them built in, as scripts/guest-kernel.sh builds)")
	cmd.AddCommand(build)
	return cmd
}

func printGuest(w io.Writer, img *guest.Image) {
	fmt.Fprintf(w, "kernel   %s  %s (%s)\ninitrd   %s  %s (%d files, %d modules)\n",
		img.KernelDigest, img.Kernel, img.Release, img.InitrdDigest, img.Initrd, img.Files, len(img.Modules))
	if img.Verity != nil {
		fmt.Fprintf(w, "rootfs   %s  %s (dm-verity root %s)\n", img.RootfsDigest, img.Rootfs, img.Verity.RootHash)
	}
	fmt.Fprintf(w, "agent    %s\n", img.AgentDigest)
}

// ensureGuest returns the guest image in dir, building it first when it is
// missing or was built from another agent binary (agentDigest is the
// binary's guest.FileDigest).
func ensureGuest(ctx context.Context, dir, agentBin, agentDigest string, progress io.Writer) (*guest.Image, error) {
	if img, err := guest.Load(dir); err == nil && img.AgentDigest == agentDigest {
		return img, nil
	}
	fmt.Fprintf(progress, "cocoon: building the VM guest image in %s (cocoon guest build) ...\n", filepath.Clean(dir))
	return guest.Build(ctx, guest.Options{Agent: agentBin, Out: dir})
}
