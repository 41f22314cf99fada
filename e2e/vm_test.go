package e2e

import (
	"bytes"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/testimage"
	"cocoon.dev/cocoon/layerdisk"
	"cocoon.dev/cocoon/sandbox"
)

// vmReady skips (or, in CI, fails) a test when QEMU or the guest kernel is
// missing.
// guestBuild builds the guest image with the agent binary: with Debian's
// cloud kernel, or with the kernel COCOON_TEST_GUEST_KERNEL names (one with
// everything built in, from scripts/guest-kernel.sh).
func (x *h) guestBuild(agent string) {
	x.t.Helper()
	args := []string{"guest", "build", "--agent", agent}
	if k := os.Getenv("COCOON_TEST_GUEST_KERNEL"); k != "" {
		args = append(args, "--kernel", k, "--modules", "none")
	}
	x.mustRun(0, args...)
}

func vmReady(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing = append(missing, "qemu-system-x86")
	}
	if ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64"); len(ks) == 0 {
		missing = append(missing, "linux-image-cloud-amd64")
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("VM tests need %s; .ci/run installs them", strings.Join(missing, ", "))
	}
	t.Skipf("VM tests need %s", strings.Join(missing, ", "))
}

// vmPod: an init container from an OCI layout on the host (copied into the
// VM over the channel) writes a marker made inside the VM into an emptyDir;
// the main container, from the registry (pulled through the egress
// channel), prints only the marker's hash and keeps running. The marker's
// prefix is assembled at run time, so it appears in no host file.
func vmPod(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {medium: Memory}
  initContainers:
  - name: writer
    image: oci:%s:busybox
    command: ["sh", "-c", "p=cocoon-vm-; echo \"${p}boundary-$(cat /proc/sys/kernel/random/uuid)\" > /scratch/marker"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  containers:
  - name: main
    image: %s
    command: ["sh", "-c", "echo marker-sha256 $(sha256sum < /scratch/marker | cut -c1-16); exec sleep 1000"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    resources: {limits: {memory: 64Mi, cpu: 500m}}
`, name, env.layout, env.pinned)
}

// TestVMSandbox runs a pod in a VM (software emulation here): pulls from an
// OCI layout and a registry, logs, exec, evidence that verifies with the
// policy hash and the VM's launch measurement, the emptyDir invisible on
// the host, and rm that leaves nothing behind.
func TestVMSandbox(t *testing.T) {
	x := newH(t)
	vmReady(t)
	agent := filepath.Join(env.bin, "cocoon-agent")
	x.guestBuild(agent)
	x.mustRun(0, "run", "-d", "--isolation", "qemu", "--debug", x.pod(vmPod("vm")))
	st := x.waitPhaseFor("vm", sandbox.PhaseRunning, 3*time.Minute)
	if st.Isolation != "qemu" || st.TEE != "sim" {
		t.Fatalf("status %+v", st)
	}
	// The VM is sized from the pod's limits.
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.AgentPID)); !bytes.Contains(cmdline, []byte("-m\x00384M\x00")) {
		t.Errorf("QEMU command line %q: want -m 384M (320 MiB base + 64Mi limit)", bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	var logs string
	for range 100 {
		logs, _, _ = x.cocoon("logs", "vm", "-c", "main")
		if strings.Contains(logs, "marker-sha256 ") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(logs, "marker-sha256 ") {
		t.Fatalf("logs: %q", logs)
	}
	// The layout's layer blobs stayed on the host: the guest took the
	// layers from disks and was sent only the layout's other files.
	shimLog, _ := os.ReadFile(filepath.Join(sandbox.Root(x.root).Dir("vm"), "shim.log"))
	if !strings.Contains(string(shimLog), `"msg":"local image source sent"`) || !strings.Contains(string(shimLog), `"skipped_files":1`) {
		t.Errorf("the OCI layout was sent with its layer blob, or not at all:\n%s", shimLog)
	}
	out, errs := x.mustRun(0, "exec", "vm", "-c", "main", "--", "sh", "-c", "sha256sum < /scratch/marker | cut -c1-16")
	if want := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(logs), "marker-sha256 ")); strings.TrimSpace(out) != want {
		t.Errorf("exec: %q (stderr %q), want %q", out, errs, want)
	}

	// Evidence: HOST_DATA is the policy hash, MEASUREMENT the VM launch's.
	ev, _ := x.mustRun(0, "attest", "vm", "--nonce", "0a0b")
	f := filepath.Join(t.TempDir(), "ev.json")
	os.WriteFile(f, []byte(ev), 0o644)
	js, _ := x.mustRun(0, "verify", "--trust-sim", "--nonce", "0a0b", "-o", "json", f)
	var res struct {
		Claims struct {
			Measurement string
			HostData    string `json:"host_data"`
		}
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatal(err)
	}
	m, _ := x.mustRun(0, "measure", "--tee", "sim", "--isolation", "qemu", "--agent", agent)
	pm, _ := x.mustRun(0, "measure", "--tee", "sim", "--isolation", "process", "--agent", agent)
	if strings.TrimSpace(m) != res.Claims.Measurement || strings.TrimSpace(pm) == res.Claims.Measurement {
		t.Errorf("measurement: evidence %s, cocoon measure --isolation qemu %s (process %s)", res.Claims.Measurement, m, pm)
	}
	if res.Claims.HostData != st.HostData || st.HostData == "" {
		t.Errorf("host_data %s, status %s", res.Claims.HostData, st.HostData)
	}

	// The boundary: the marker exists only in guest memory. The search
	// must be able to find it: a control file with the same prefix is
	// found first.
	// (The needle is joined at run time so that this test's binary does
	// not hold it; x.root is under the temporary directory.)
	dirs := []string{os.TempDir(), "/run", "/dev/shm", "/var/lib/cocoon"}
	needle := strings.Join([]string{"cocoon", "vm", "boundary-"}, "-")
	ctl := filepath.Join(x.root, "control")
	os.WriteFile(ctl, []byte("xx "+needle+"control"), 0o600)
	if hits := grepTree(dirs, needle); len(hits) != 1 || hits[0] != ctl {
		t.Fatalf("control search found %v, want only %s", hits, ctl)
	}
	os.Remove(ctl)
	if hits := grepTree(dirs, needle); len(hits) != 0 {
		t.Errorf("the emptyDir's content is visible on the host in %v", hits)
	}

	qemu := st.AgentPID
	x.mustRun(0, "stop", "vm", "-t", "1s")
	if st := x.waitPhaseFor("vm", sandbox.PhaseStopped, 30*time.Second); st.Containers[len(st.Containers)-1].State != "exited" {
		t.Errorf("after stop: %+v", st.Containers)
	}
	x.mustRun(0, "rm", "vm")
	if syscall.Kill(qemu, 0) == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(qemu) + "/stat"); !bytes.Contains(b, []byte(") Z")) {
			t.Errorf("QEMU (pid %d) still runs after rm", qemu)
		}
	}
	if _, err := os.Stat(sandbox.Root(x.root).Dir("vm")); !os.IsNotExist(err) {
		t.Errorf("sandbox directory left after rm: %v", err)
	}
}

// TestVMKilledIsDetected: killing QEMU is reported as the agent's death,
// with exit code 137, and the sandbox can be removed.
func TestVMKilledIsDetected(t *testing.T) {
	x := newH(t)
	vmReady(t)
	x.guestBuild(filepath.Join(env.bin, "cocoon-agent"))
	x.mustRun(0, "run", "-d", "--isolation", "qemu", x.pod(simplePod("vmk", env.busybox, "Never", "exec sleep 1000")))
	st := x.waitPhaseFor("vmk", sandbox.PhaseRunning, 3*time.Minute)
	if err := syscall.Kill(st.AgentPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = x.waitPhaseFor("vmk", sandbox.PhaseAgentDied, 30*time.Second)
	if st.ExitCode != 137 || !strings.Contains(st.Message, "exited unexpectedly") {
		t.Errorf("status after QEMU was killed: %+v", st)
	}
	out, _, _ := x.cocoon("ps")
	if !strings.Contains(out, sandbox.PhaseAgentDied) || !strings.Contains(out, "qemu/sim") {
		t.Errorf("ps: %s", out)
	}
	x.mustRun(0, "rm", "vmk")
}

// grepTree lists the regular files under dirs that contain s.
func grepTree(dirs []string, s string) []string {
	var hits []string
	needle := []byte(s)
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if e.IsDir() && p != d && (strings.HasPrefix(p, "/proc") || strings.HasPrefix(p, "/sys")) {
				return filepath.SkipDir
			}
			if !e.Type().IsRegular() {
				return nil
			}
			if info, err := e.Info(); err != nil || info.Size() > 256<<20 {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, needle) {
				hits = append(hits, p)
			}
			return nil
		})
	}
	return hits
}

// TestVMTamperedRootfsRefused: the guest's root filesystem is read through
// dm-verity with the root hash the measured initramfs names; a changed
// byte on the host's disk image stops the boot, and no sandbox is left.
func TestVMTamperedRootfsRefused(t *testing.T) {
	x := newH(t)
	vmReady(t)
	x.guestBuild(filepath.Join(env.bin, "cocoon-agent"))
	img := filepath.Join(sandbox.Root(x.root).GuestDir(), "rootfs.img")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 100) // in the squashfs superblock, read at mount
	b[0] ^= 0xff
	f.WriteAt(b, 100)
	f.Close()
	_, errs, code := x.cocoon("run", "--isolation", "qemu", x.pod(simplePod("vmt", env.busybox, "Never", "true")))
	if code != 125 || !strings.Contains(errs, "the VM exited before its agent was ready") ||
		!strings.Contains(errs, "cocoon-init: mount the root filesystem") {
		t.Errorf("exit %d, stderr %s", code, errs)
	}
	x.noSandbox("vmt")
	if out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+x.root).Output(); len(out) > 0 {
		t.Errorf("QEMU still runs: %s", out)
	}
}

// TestVMEncryptedVolume: inside a VM the guest kernel has dm-crypt, so the
// agent opens the volume (a virtio disk) with device-mapper ioctls; the
// pod reads and writes through it, the host image holds only ciphertext,
// and a read-only volume refuses writes.
func TestVMEncryptedVolume(t *testing.T) {
	x := newH(t)
	vmReady(t)
	x.guestBuild(filepath.Join(env.bin, "cocoon-agent"))
	_, addr, img, caB64 := x.volumeWithKey()
	out, errs := x.mustRun(0, "run", "--isolation", "qemu", x.pod(encPod("vmenc", env.busybox, caB64, addr, img, "kbs:///app/volume/key", false,
		"cat /data/note.txt; echo; grep -q ' /data ' /proc/mounts && grep ' /data ' /proc/mounts | cut -d' ' -f1 | grep -q dm- && echo opened-by-dm-crypt; echo VMVOLMARKER-written > /data/marker.txt; sync")))
	if !strings.Contains(out, "note from the data owner") || !strings.Contains(out, "opened-by-dm-crypt") {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	raw, _ := os.ReadFile(img)
	if bytes.Contains(raw, []byte("VMVOLMARKER")) || bytes.Contains(raw, []byte("note from the data owner")) {
		t.Fatal("the image on the host holds plaintext")
	}
	x.mustRun(0, "rm", "vmenc")
	// The same image on an HTTP server: read-only, through the VM's egress
	// channel with range requests, decrypted in the guest's userspace path.
	srvURL, ranged := serveRanges(t, img)
	out, _ = x.mustRun(0, "run", "--isolation", "qemu", x.pod(encPod("vmencro", env.busybox, caB64, addr, srvURL, "kbs:///app/volume/key", true,
		"cat /data/marker.txt; touch /data/x 2>/dev/null || echo read-only-refused")))
	if !strings.Contains(out, "VMVOLMARKER-written") || !strings.Contains(out, "read-only-refused") || ranged.Load() == 0 {
		t.Errorf("read-only volume from a URL (%d range requests): %s", ranged.Load(), out)
	}
}

// TestVMTEERefusals: a VM sandbox without a TEE to bind its policy to, or
// with a TEE this host cannot launch, is refused before anything starts.
func TestVMTEERefusals(t *testing.T) {
	x := newH(t)
	vmReady(t)
	for _, c := range []struct{ tee, want string }{
		{"none", "needs a TEE"},
		{"snp", "cannot launch SNP guests"},
		{"tdx", "cannot launch TDX guests"},
		{"sgx", `want snp, tdx or sim`},
	} {
		if string(sandbox.HostTEE()) == c.tee {
			continue
		}
		_, errs, code := x.cocoon("run", "--isolation", "qemu", "--tee", c.tee, x.pod(simplePod("vmr", env.busybox, "Never", "true")))
		if code != 125 || !strings.Contains(errs, c.want) {
			t.Errorf("--tee %s: exit %d, stderr %s", c.tee, code, errs)
		}
		x.noSandbox("vmr")
	}
	if out, _ := exec.Command("pgrep", "-f", "qemu-system.*"+x.root).Output(); len(out) > 0 {
		t.Errorf("QEMU runs: %s", out)
	}
}

// layeredImage is busybox with two more layers: a small marker and a
// 64 KiB file whose data spans many blocks.
func layeredImage(t *testing.T, tag string) string {
	t.Helper()
	small, err := testimage.Layer([]testimage.File{{Path: "/marker", Data: []byte("from-a-layer-disk-" + tag + "\n"), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	big, err := testimage.Layer([]testimage.File{{Path: "/big", Data: bytes.Repeat([]byte("layer-disk-data-"), 4096), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Busybox(small, big)
	if err != nil {
		t.Fatal(err)
	}
	_, pinned, err := env.reg.Push("disks/app:"+tag, img)
	if err != nil {
		t.Fatal(err)
	}
	return pinned
}

// TestVMLayerDisks: two VM pods of one multi-layer image take every layer
// from the node's verified disks, built once and shared; a disk altered
// after the policy was generated is refused (its first blocks) or reads
// as an I/O error (a data block), never as other data.
func TestVMLayerDisks(t *testing.T) {
	x := newH(t)
	vmReady(t)
	x.guestBuild(filepath.Join(env.bin, "cocoon-agent"))
	ref := layeredImage(t, "v1")
	pod := func(name string) string {
		p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: %s
    command: ["sh", "-c", "cat /marker; md5sum /big | cut -c1-32"]
`, name, ref))
		x.mustRun(0, "policy", "generate", p)
		return p
	}
	p1, p2 := pod("disks-a"), pod("disks-b")
	pol, _ := x.mustRun(0, "policy", "generate", "--print", p1)
	if !strings.Contains(pol, `"layer_disks"`) {
		t.Fatalf("the policy pins no layer disks:\n%s", pol)
	}
	want := fmt.Sprintf("%x", md5.Sum(bytes.Repeat([]byte("layer-disk-data-"), 4096)))
	for _, p := range []string{p1, p2} {
		out, errs := x.mustRun(0, "run", "--isolation", "qemu", "--trace", p)
		if !strings.Contains(out, "from-a-layer-disk-v1") || !strings.Contains(out, want) || !strings.Contains(out+errs, "3 from verified disks") || !strings.Contains(errs, "layer disks ready") {
			t.Fatalf("stdout %q stderr %q", out, errs)
		}
	}
	disks, _ := filepath.Glob(filepath.Join(x.root, "layerdisks", "sha256", "*.disk"))
	if len(disks) != 3 {
		t.Fatalf("%d layer disks in the node's cache, want 3 (built once, shared): %v", len(disks), disks)
	}
	// Each sandbox holds the three disks: pruning keeps them.
	var held []layerdisk.Entry
	out, _ := x.mustRun(0, "image", "disks", "ls", "-o", "json")
	if err := json.Unmarshal([]byte(out), &held); err != nil || len(held) != 3 {
		t.Fatalf("image disks ls: %v %s", err, out)
	}
	for _, e := range held {
		if e.Users != 2 {
			t.Errorf("disk %s held by %d sandboxes, want 2", e.DiffID, e.Users)
		}
	}
	if out, _ := x.mustRun(0, "image", "disks", "prune", "--unused-for", "0"); !strings.Contains(out, "0 disks removed") {
		t.Errorf("prune with every disk held: %s", out)
	}
	x.mustRun(0, "rm", "disks-a")
	x.mustRun(0, "rm", "disks-b")

	// Alter the big layer's disk: a byte of its file's data (block 5).
	bigDisk := ""
	for _, d := range disks {
		if st, _ := os.Stat(d); st.Size() > 64<<10 {
			bigDisk = d
		}
	}
	if bigDisk == "" {
		t.Fatal("no disk holds the 64 KiB layer")
	}
	orig, _ := os.ReadFile(bigDisk)
	flip := func(at int) {
		b := append([]byte(nil), orig...)
		b[at] ^= 0xff
		os.Chmod(bigDisk, 0o644)
		if err := os.WriteFile(bigDisk, b, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	flip(5*4096 + 100)
	out, errs := x.mustRun(0, "run", "--isolation", "qemu", p1)
	if strings.Contains(out, want) || !strings.Contains(out, "Input/output error") {
		t.Fatalf("an altered data block: stdout %q stderr %q", out, errs)
	}
	x.mustRun(0, "rm", "disks-a")
	// Its first block (the superblock): the disk is refused, nothing starts.
	flip(10)
	out, errs = x.mustRun(125, "run", "--isolation", "qemu", p1)
	if strings.Contains(out, "from-a-layer-disk") || !strings.Contains(errs, "does not open against the policy's root hash") {
		t.Fatalf("an altered superblock: stdout %q stderr %q", out, errs)
	}
	x.cocoon("rm", "-f", "disks-a") // if the refusal left one
	// An image the policy does not pin: refused, whatever disks exist.
	other := layeredImage(t, "v2")
	b, _ := os.ReadFile(p1)
	os.WriteFile(p1, bytes.ReplaceAll(b, []byte(ref), []byte(other)), 0o644)
	out, errs = x.mustRun(125, "run", "--isolation", "qemu", p1)
	if strings.Contains(out, "from-a-layer-disk") || !strings.Contains(errs, "is not in the policy") {
		t.Fatalf("an image the policy does not pin: stdout %q stderr %q", out, errs)
	}
	// No sandbox holds a disk now: pruning empties the cache.
	x.cocoon("rm", "-f", "disks-a")
	var res layerdisk.PruneResult
	out, _ = x.mustRun(0, "image", "disks", "prune", "--unused-for", "0", "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Removed) != 3 || res.Kept != 0 || res.FreedBytes == 0 {
		t.Fatalf("prune: %v %s", err, out)
	}
	if left, _ := filepath.Glob(filepath.Join(x.root, "layerdisks", "sha256", "*")); len(left) != 0 {
		t.Fatalf("left in the cache: %v", left)
	}
}
