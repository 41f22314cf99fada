package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"cocoon.dev/cocoon/guestinit"
)

// fakeKernel lays out a kernel file and a modules directory.
func fakeKernel(t *testing.T) (kernel, mods string) {
	t.Helper()
	d := t.TempDir()
	kernel = filepath.Join(d, "vmlinuz-9.9.9-test")
	os.WriteFile(kernel, []byte("not really a kernel"), 0o644)
	mods = filepath.Join(d, "modules")
	dep := "kernel/a/virtio.ko:\nkernel/a/virtio_ring.ko:\n" +
		"kernel/a/virtio_pci.ko: kernel/a/virtio_ring.ko kernel/a/virtio.ko\n" +
		"kernel/b/virtio_console.ko: kernel/a/virtio_ring.ko kernel/a/virtio.ko\n" +
		"kernel/c/overlay.ko:\nkernel/d/unused.ko:\n"
	for _, m := range []string{"a/virtio", "a/virtio_ring", "a/virtio_pci", "b/virtio_console", "c/overlay", "d/unused"} {
		p := filepath.Join(mods, "kernel", m+".ko")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("module "+m), 0o644)
	}
	os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(dep), 0o644)
	return kernel, mods
}

func testOptions(t *testing.T, out string) Options {
	kernel, mods := fakeKernel(t)
	for _, need := range []string{"/bin/busybox", "mksquashfs"} {
		if _, err := exec.LookPath(need); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("needs %s", need)
			}
			t.Skipf("needs %s", need)
		}
	}
	return Options{Kernel: kernel, ModulesDir: mods, Agent: "/bin/busybox", Init: "/bin/busybox", Runc: "/bin/busybox", Busybox: "/bin/busybox", Out: out,
		Modules: []string{"virtio_console", "virtio-pci", "overlay", "not_there"}}
}

// readCPIO parses a newc archive into name -> (mode, data).
func readCPIO(t *testing.T, b []byte) (map[string]uint32, map[string][]byte, []string) {
	t.Helper()
	modes, data := map[string]uint32{}, map[string][]byte{}
	var order []string
	off := 0
	field := func(i int) int {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("bad header at %d: %v", off, err)
		}
		return int(v)
	}
	pad := func(n int) int { return (n + 3) &^ 3 }
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d", off)
		}
		mode, size, nameLen := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+nameLen-1])
		if name == "TRAILER!!!" {
			return modes, data, order
		}
		if field(5) != 0 || field(2) != 0 || field(3) != 0 {
			t.Errorf("%s: mtime/uid/gid not zero", name)
		}
		start := pad(off + 110 + nameLen)
		modes[name], data[name] = uint32(mode), b[start:start+size]
		order = append(order, name)
		off = pad(start + size)
	}
}

func TestBuildReproducibleAndComplete(t *testing.T) {
	o := testOptions(t, t.TempDir())
	img, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	o2 := o
	o2.Out = t.TempDir()
	img2, err := Build(context.Background(), o2)
	if err != nil {
		t.Fatal(err)
	}
	if img.InitrdDigest != img2.InitrdDigest || img.KernelDigest != img2.KernelDigest || img.RootfsDigest != img2.RootfsDigest {
		t.Errorf("two builds differ: %s %s, %s %s", img.InitrdDigest, img2.InitrdDigest, img.RootfsDigest, img2.RootfsDigest)
	}
	if d, _ := FileDigest(img.Rootfs); d != img.RootfsDigest || img.Verity == nil || len(img.Verity.RootHash) != 64 {
		t.Errorf("rootfs %s, manifest %s, verity %+v", d, img.RootfsDigest, img.Verity)
	}
	b, _ := os.ReadFile(img.Initrd)
	if d, _ := FileDigest(img.Initrd); d != img.InitrdDigest {
		t.Errorf("manifest digest %s, file %s", img.InitrdDigest, d)
	}
	modes, data, order := readCPIO(t, b)
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("entries not sorted: %s before %s", order[i-1], order[i])
		}
	}
	bb, _ := os.ReadFile("/bin/busybox")
	if !bytes.Equal(data["init"], bb) || modes["init"] != modeFile|0o755 {
		t.Errorf("/init is not cocoon-init (mode %o)", modes["init"])
	}
	if modes["dev/console"] != modeChar|0o600 || modes["sysroot"] != modeDir|0o755 {
		t.Errorf("console %o, sysroot %o", modes["dev/console"], modes["sysroot"])
	}
	if _, ok := data["usr/bin/cocoon-agent"]; ok {
		t.Error("the agent is in the initramfs; it belongs to the verity root filesystem")
	}
	var gc guestinit.Config
	if err := json.Unmarshal(data[guestinit.ConfigPath], &gc); err != nil {
		t.Fatal(err)
	}
	// The initramfs (measured) names the root filesystem by its root hash.
	if gc.Rootfs == nil || gc.Rootfs.RootHash != img.Verity.RootHash || gc.RootfsSerial != guestinit.RootfsSerial {
		t.Errorf("guest config rootfs %+v, manifest %+v", gc.Rootfs, img.Verity)
	}
	// Dependencies first; absent and unrequested modules left out.
	want := []string{"virtio_ring", "virtio", "virtio_console", "virtio_pci", "overlay"}
	if len(gc.Modules) != len(want) {
		t.Fatalf("modules %v, want %v", gc.Modules, want)
	}
	for i, m := range gc.Modules {
		if !strings.HasSuffix(m, "/"+want[i]+".ko") || !strings.HasPrefix(m, "lib/modules/9.9.9-test/") {
			t.Errorf("module %d: %s, want %s", i, m, want[i])
		}
		if _, ok := data[m]; !ok {
			t.Errorf("module %s listed but not in the archive", m)
		}
	}
	// A changed input changes the digest.
	os.WriteFile(filepath.Join(o.ModulesDir, "kernel/c/overlay.ko"), []byte("patched"), 0o644)
	o2.Out = t.TempDir()
	img3, err := Build(context.Background(), o2)
	if err != nil {
		t.Fatal(err)
	}
	if img3.InitrdDigest == img.InitrdDigest {
		t.Error("a changed module did not change the initramfs digest")
	}
	// A changed root filesystem input changes the root hash, hence the
	// initramfs (and the launch measurement).
	o4 := o2
	o4.Out, o4.Runc = t.TempDir(), "/bin/ls"
	img4, err := Build(context.Background(), o4)
	if err != nil {
		t.Fatal(err)
	}
	if img4.Verity.RootHash == img3.Verity.RootHash || img4.InitrdDigest == img3.InitrdDigest {
		t.Error("another runc did not change the root hash and the initramfs")
	}
	if l, err := Load(o.Out); err != nil || l.InitrdDigest != img.InitrdDigest {
		t.Errorf("Load: %v %+v", err, l)
	}
}

func TestBuildRefusesDynamicAgent(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.Agent = "/bin/ls"
	_, err := Build(context.Background(), o)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("err = %v", err)
	}
	if _, serr := os.Stat(filepath.Join(o.Out, Manifest)); serr == nil {
		t.Error("a manifest was written for a failed build")
	}
}

func TestSharedLibs(t *testing.T) {
	libs, err := sharedLibs("/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	var interp, libc bool
	for _, l := range libs {
		interp = interp || strings.Contains(l, "ld-linux")
		libc = libc || strings.HasSuffix(l, "/libc.so.6")
	}
	if !interp || !libc {
		t.Errorf("libs of /bin/ls: %v", libs)
	}
	if libs, err := sharedLibs("/bin/busybox"); err != nil || len(libs) != 0 {
		t.Errorf("static busybox: %v %v", libs, err)
	}
}
