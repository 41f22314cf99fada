package sandbox

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"cocoon.dev/cocoon/tee"
)

// QEMUConfig describes one sandbox VM (the "qemu" isolation backend, which
// is being built: this is its command line).
type QEMUConfig struct {
	// TEE is "snp", "tdx" or "" (a plain VM whose agent gets simulated
	// evidence from the host).
	TEE tee.Kind
	// KVM uses /dev/kvm; without it QEMU emulates (TCG), which works for
	// plain VMs only.
	KVM     bool
	Binary  string // default qemu-system-x86_64
	Kernel  string
	Initrd  string
	Cmdline string
	// Firmware is OVMF (SNP) or TDVF (TDX); required with a TEE.
	Firmware  string
	MemoryMiB int // default 512
	VCPUs     int // default 1
	// HostData is SNP's HOST_DATA (32 bytes: the policy's SHA-256);
	// MRConfigID is TDX's (48 bytes: the policy's SHA-384).
	HostData   []byte
	MRConfigID []byte
	// AgentSocket is a unix socket behind a virtio-serial port named
	// cocoon.agent: the agent's channel (there is no vsock channel).
	AgentSocket string
	// Drives are disk images given to the guest (encrypted volumes).
	Drives []Drive
	// CBitPos and ReducedPhysBits are the host CPU's SEV parameters
	// (EPYC: 51 and 1).
	CBitPos, ReducedPhysBits int
	// Tap is a tap device (in QEMU's network namespace) behind a
	// virtio-net NIC with address MAC: the pod network (none when empty).
	Tap, MAC string
}

// Drive is a raw disk image attached as a virtio-blk device whose serial
// number the guest looks it up by.
type Drive struct {
	Path     string
	Serial   string
	ReadOnly bool
}

// QEMUArgs builds the QEMU command line for a sandbox VM: SEV-SNP guests get
// sev-snp-guest with host-data and kernel hashes on (the kernel, initrd and
// command line are measured), TDX guests get tdx-guest with mrconfigid, and
// both get private memory from a memfd backend.
func QEMUArgs(c QEMUConfig) ([]string, error) {
	if c.Kernel == "" || c.Initrd == "" {
		return nil, errors.New("qemu: a kernel and an initramfs are required (cocoon guest build)")
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 512
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.CBitPos == 0 {
		c.CBitPos, c.ReducedPhysBits = 51, 1
	}
	bin := c.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	mem := strconv.Itoa(c.MemoryMiB) + "M"
	args := []string{bin, "-nodefaults", "-nographic", "-no-reboot", "-no-user-config",
		"-m", mem, "-smp", strconv.Itoa(c.VCPUs),
		"-kernel", c.Kernel, "-initrd", c.Initrd, "-append", c.Cmdline}
	switch c.TEE {
	case tee.SNP:
		if !c.KVM {
			return nil, errors.New("qemu: SEV-SNP needs KVM")
		}
		if len(c.HostData) != 32 {
			return nil, fmt.Errorf("qemu: SEV-SNP host-data must be 32 bytes (the policy's SHA-256), got %d", len(c.HostData))
		}
		if c.Firmware == "" {
			return nil, errors.New("qemu: SEV-SNP needs OVMF firmware")
		}
		args = append(args, "-enable-kvm", "-cpu", "EPYC-v4",
			"-machine", "q35,confidential-guest-support=sev0,memory-backend=ram1",
			"-object", "memory-backend-memfd,id=ram1,size="+mem+",share=true,prealloc=false",
			"-object", fmt.Sprintf("sev-snp-guest,id=sev0,cbitpos=%d,reduced-phys-bits=%d,kernel-hashes=on,host-data=%s",
				c.CBitPos, c.ReducedPhysBits, base64.StdEncoding.EncodeToString(c.HostData)),
			"-bios", c.Firmware)
	case tee.TDX:
		if !c.KVM {
			return nil, errors.New("qemu: TDX needs KVM")
		}
		if len(c.MRConfigID) != 48 {
			return nil, fmt.Errorf("qemu: TDX mrconfigid must be 48 bytes (the policy's SHA-384), got %d", len(c.MRConfigID))
		}
		if c.Firmware == "" {
			return nil, errors.New("qemu: TDX needs TDVF firmware")
		}
		args = append(args, "-enable-kvm", "-cpu", "host",
			"-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1",
			"-object", "memory-backend-memfd,id=ram1,size="+mem,
			"-object", "tdx-guest,id=tdx0,mrconfigid="+base64.StdEncoding.EncodeToString(c.MRConfigID),
			"-bios", c.Firmware)
	case "":
		if c.KVM {
			args = append(args, "-enable-kvm", "-cpu", "host", "-machine", "q35")
		} else {
			// A small translation cache: QEMU's default (up to 1 GiB) is
			// the largest part of an emulated VM's host memory.
			args = append(args, "-accel", "tcg,tb-size=64", "-cpu", "max", "-machine", "q35")
		}
		// Pages the guest frees (the initramfs after it is unpacked) go
		// back to the host. Confidential guests' memory is private, so
		// they do without.
		args = append(args, "-device", "virtio-balloon-pci,free-page-reporting=on")
	default:
		return nil, fmt.Errorf("qemu: TEE %q: want snp, tdx or none", c.TEE)
	}
	switch {
	case c.AgentSocket != "":
		if strings.ContainsAny(c.AgentSocket, ",") {
			return nil, errors.New("qemu: the agent socket path must not contain a comma")
		}
		args = append(args, "-device", "virtio-serial-pci",
			"-chardev", "socket,id=agent,path="+c.AgentSocket+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name=cocoon.agent")
	default:
		return nil, errors.New("qemu: give a vsock CID (>= 3) or an agent socket")
	}
	for i, d := range c.Drives {
		if strings.ContainsAny(d.Path, ",") || strings.ContainsAny(d.Serial, ",=") || len(d.Serial) > 20 {
			return nil, fmt.Errorf("qemu: drive %q: the path must not contain a comma, the serial at most 20 characters", d.Path)
		}
		// Writable disks bypass the host's page cache (what the guest
		// writes is on the disk when it says so); read-only ones use it.
		ro, cache := "off", "none"
		if d.ReadOnly {
			ro, cache = "on", "writeback"
		}
		id := "vol" + strconv.Itoa(i)
		args = append(args, "-drive", "file="+d.Path+",format=raw,if=none,cache="+cache+",aio=threads,readonly="+ro+",id="+id,
			"-device", "virtio-blk-pci,drive="+id+",serial="+d.Serial)
	}
	if c.Tap != "" {
		if strings.ContainsAny(c.Tap+c.MAC, ",=") {
			return nil, fmt.Errorf("qemu: tap %q / MAC %q must not contain ',' or '='", c.Tap, c.MAC)
		}
		args = append(args, "-netdev", "tap,id=pod0,ifname="+c.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=pod0,mac="+c.MAC)
	}
	args = append(args, "-serial", "stdio")
	return args, nil
}
