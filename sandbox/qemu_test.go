package sandbox

import (
	"bytes"
	"encoding/base64"
	"runtime"
	"strings"
	"testing"

	"cocoon.dev/cocoon/pod"
)

func joined(t *testing.T, c QEMUConfig) string {
	t.Helper()
	a, err := QEMUArgs(c)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(a, " ")
}

// TestQEMUArgs checks the command line of each TEE variant against the
// documented QEMU options.
func TestQEMUArgs(t *testing.T) {
	base := QEMUConfig{Kernel: "/g/vmlinuz", Initrd: "/g/initrd", Cmdline: "console=ttyS0", MemoryMiB: 256, VCPUs: 2, AgentSocket: "/run/cocoon/x/agent.sock"}
	hd := bytes.Repeat([]byte{0xab}, 32)
	cid := bytes.Repeat([]byte{0xcd}, 48)

	snp := base
	snp.TEE, snp.KVM, snp.HostData, snp.Firmware = "snp", true, hd, "/usr/share/ovmf/OVMF.fd"
	s := joined(t, snp)
	for _, want := range []string{
		"-enable-kvm", "-machine q35,confidential-guest-support=sev0,memory-backend=ram1",
		"-object memory-backend-memfd,id=ram1,size=256M,share=true",
		"sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data=" + base64.StdEncoding.EncodeToString(hd),
		"-bios /usr/share/ovmf/OVMF.fd", "-kernel /g/vmlinuz -initrd /g/initrd -append console=ttyS0",
		"name=cocoon.agent", "-m 256M -smp 2",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("SNP command line lacks %q:\n%s", want, s)
		}
	}
	tdx := base
	tdx.TEE, tdx.KVM, tdx.MRConfigID, tdx.Firmware = "tdx", true, cid, "/usr/share/ovmf/TDVF.fd"
	s = joined(t, tdx)
	for _, want := range []string{
		"-machine q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1",
		"tdx-guest,id=tdx0,mrconfigid=" + base64.StdEncoding.EncodeToString(cid), "-bios /usr/share/ovmf/TDVF.fd",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("TDX command line lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "virtio-balloon") || strings.Contains(joined(t, snp), "virtio-balloon") {
		t.Errorf("a confidential VM has a balloon (its memory is private): %s", s)
	}
	plain := base
	plain.AgentSocket = "/run/cocoon/x/agent.sock"
	plain.Drives = []Drive{{Path: "/v/data.img", Serial: "cv0123", ReadOnly: true}, {Path: "/v/rw.img", Serial: "cv4567"}}
	s = joined(t, plain)
	for _, want := range []string{"-accel tcg,tb-size=64", "-cpu max", "virtserialport,chardev=agent,name=cocoon.agent",
		"socket,id=agent,path=/run/cocoon/x/agent.sock,server=on,wait=off",
		"-device virtio-balloon-pci,free-page-reporting=on",
		"-drive file=/v/data.img,format=raw,if=none,cache=writeback,aio=threads,readonly=on,id=vol0 -device virtio-blk-pci,drive=vol0,serial=cv0123",
		"-drive file=/v/rw.img,format=raw,if=none,cache=none,aio=threads,readonly=off,id=vol1 -device virtio-blk-pci,drive=vol1,serial=cv4567"} {
		if !strings.Contains(s, want) {
			t.Errorf("plain command line lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "sev-snp") || strings.Contains(s, "tdx") {
		t.Errorf("a plain VM has TEE options: %s", s)
	}
	// Refusals.
	for name, c := range map[string]QEMUConfig{
		"snp without kvm":      {TEE: "snp", Kernel: "k", Initrd: "i", HostData: hd, Firmware: "f", AgentSocket: "/a.sock"},
		"snp short host-data":  {TEE: "snp", KVM: true, Kernel: "k", Initrd: "i", HostData: hd[:8], Firmware: "f", AgentSocket: "/a.sock"},
		"tdx short mrconfigid": {TEE: "tdx", KVM: true, Kernel: "k", Initrd: "i", MRConfigID: hd, Firmware: "f", AgentSocket: "/a.sock"},
		"tdx without firmware": {TEE: "tdx", KVM: true, Kernel: "k", Initrd: "i", MRConfigID: cid, AgentSocket: "/a.sock"},
		"no channel":           {Kernel: "k", Initrd: "i"},
		"no kernel":            {AgentSocket: "/a.sock"},
		"unknown tee":          {TEE: "sgx", Kernel: "k", Initrd: "i", AgentSocket: "/a.sock"},
		"comma in drive":       {Kernel: "k", Initrd: "i", AgentSocket: "/a.sock", Drives: []Drive{{Path: "/a,b", Serial: "s"}}},
		"long serial":          {Kernel: "k", Initrd: "i", AgentSocket: "/a.sock", Drives: []Drive{{Path: "/a", Serial: strings.Repeat("s", 21)}}},
	} {
		if _, err := QEMUArgs(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestVMSize(t *testing.T) {
	for _, c := range []struct {
		limits   string
		mem, cpu int
	}{
		{"", DefaultVMMemoryMiB, 1},
		{"resources: {limits: {memory: 64Mi, cpu: 500m}}", DefaultVMBaseMiB + 64, 1},
		{"resources: {limits: {memory: 1Gi, cpu: 64}}", DefaultVMBaseMiB + 1024, runtime.NumCPU()},
	} {
		p, err := pod.Parse([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: s}\nspec:\n  containers:\n  - name: a\n    image: busybox\n    " + c.limits + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if mem, cpu := VMSize(p); mem != c.mem || cpu != c.cpu {
			t.Errorf("%q: %d MiB, %d vCPUs; want %d, %d", c.limits, mem, cpu, c.mem, c.cpu)
		}
	}
}
