// Command cocoon-init is the first process of a cocoon VM guest (the
// initramfs's /init): it opens the dm-verity root filesystem the initramfs
// names, switches to it and runs cocoon-agent. See package guestinit.
package main

import (
	"fmt"
	"os"

	"cocoon.dev/cocoon/guestinit"
	"golang.org/x/sys/unix"
)

func main() {
	err := guestinit.Init()
	// Init returns only on failure: say why on the console and power off.
	fmt.Fprintln(os.Stderr, "cocoon-init:", err)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(1)
}
