package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// kvmGetAPIVersion is KVM_GET_API_VERSION, _IO(KVMIO=0xAE, 0x00); every
// KVM since Linux 2.6.22 answers 12.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// KVMAvailable reports whether this host can run an ordinary (unmodified)
// guest kernel under KVM. See [KVMProbe] for why it may not.
func KVMAvailable() bool { return KVMProbe() == nil }

// KVMProbe returns nil when /dev/kvm can run the guest image's kernel, or
// an error that says why not. It needs more than a /dev/kvm that opens:
// the API version must be the stable one and the CPU must have hardware
// virtualization (vmx or svm). Without it, a /dev/kvm is a paravirtual
// KVM such as PVM that runs only guests built for it: QEMU starts, and an
// ordinary kernel hangs before its first message.
func KVMProbe() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("no usable /dev/kvm: %w", err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil {
		return fmt.Errorf("/dev/kvm: KVM_GET_API_VERSION: %w", err)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("/dev/kvm speaks KVM API version %d, not %d", v, kvmAPIVersion)
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return fmt.Errorf("reading /proc/cpuinfo: %w", err)
	}
	return cpuVirtualization(info)
}

// cpuVirtualization checks that the first processor in a /proc/cpuinfo
// lists a hardware virtualization flag (Intel VT-x "vmx", AMD-V "svm").
func cpuVirtualization(cpuinfo []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, fl := range strings.Fields(val) {
			if fl == "vmx" || fl == "svm" {
				return nil
			}
		}
		return errors.New("/dev/kvm is there but the CPU has no hardware virtualization (no vmx or svm flag in /proc/cpuinfo): it is a paravirtual KVM (such as PVM) that runs only guests built for it, so cocoon uses software emulation")
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading /proc/cpuinfo: %w", err)
	}
	return errors.New("/proc/cpuinfo lists no CPU flags, so hardware virtualization cannot be confirmed")
}
