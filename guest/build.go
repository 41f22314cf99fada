// Package guest builds the sandbox VM's guest image and boots it: a kernel,
// an initramfs holding cocoon-init and the kernel modules the guest loads,
// and a read-only root filesystem (squashfs with a dm-verity tree whose root
// hash the initramfs names) holding cocoon-agent, runc with the libraries
// it needs and busybox. The build is reproducible: the same inputs give the
// same bytes, and the kernel, initramfs and command line are what the
// (simulated) secure processor measures at launch; the root hash extends
// that measurement to the root filesystem, block by block as it is read.
package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"cocoon.dev/cocoon/guestinit"
	"cocoon.dev/cocoon/verity"
)

// DefaultModules are the kernel modules the guest loads (with their
// dependencies) when the kernel has them as modules: virtio PCI and console
// (the agent's channel), block devices, overlay (container root
// filesystems), loop, FUSE, dm-crypt with AES-XTS (encrypted volumes: the
// guest has no modprobe, so the crypto templates the kernel would ask for
// are loaded up front), dm-verity and squashfs (the root filesystem),
// vsock, and virtio-net (the pod network of a sandbox under Kubernetes).
func DefaultModules() []string {
	return []string{
		"virtio_pci", "virtio_console", "virtio_blk", "overlay", "loop", "fuse",
		"dm_crypt", "xts", "ecb", "aesni_intel", "dm_verity", "squashfs", "vmw_vsock_virtio_transport", "virtio_balloon", "virtio_net",
	}
}

// Options are a build's inputs.
type Options struct {
	// Kernel is the kernel image (default: the newest
	// /boot/vmlinuz-*-cloud-amd64, from Debian's linux-image-cloud-amd64).
	Kernel string
	// ModulesDir is the kernel's /lib/modules/<release> (default: derived
	// from the kernel's file name).
	ModulesDir string
	// Agent is cocoon-agent; it must be statically linked.
	Agent string
	// Init is cocoon-init, the guest's first process (default: next to
	// Agent); static.
	Init string
	// Runc is runc (default: runc on PATH); its shared libraries are copied.
	Runc string
	// Busybox is a static busybox (default: /bin/busybox).
	Busybox string
	// Out is the output directory.
	Out string
	// Modules overrides the module list (names, as modprobe takes them).
	Modules []string
}

// Image is a built guest image (manifest.json in the output directory).
type Image struct {
	Kernel       string            `json:"kernel"`
	Initrd       string            `json:"initrd"`
	KernelDigest string            `json:"kernel_digest"`
	InitrdDigest string            `json:"initrd_digest"`
	Rootfs       string            `json:"rootfs"`
	RootfsDigest string            `json:"rootfs_digest"`
	Verity       *guestinit.Verity `json:"verity"`
	AgentDigest  string            `json:"agent_digest"`
	Release      string            `json:"kernel_release"`
	Modules      []string          `json:"modules"`
	Files        int               `json:"files"`
}

// Manifest is the manifest's file name in a guest image directory.
const Manifest = "manifest.json"

// DefaultKernel finds the newest Debian cloud kernel in /boot.
func DefaultKernel() (string, error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		ks, _ = filepath.Glob("/boot/vmlinuz-*")
	}
	if len(ks) == 0 {
		return "", errors.New("no kernel in /boot: install Debian's linux-image-cloud-amd64 (apt-get install linux-image-cloud-amd64) or build the guest image with `cocoon guest build --kernel FILE`")
	}
	sort.Strings(ks)
	return ks[len(ks)-1], nil
}

// Build builds the guest image into o.Out and returns its manifest.
func Build(ctx context.Context, o Options) (*Image, error) {
	var err error
	if o.Kernel == "" {
		if o.Kernel, err = DefaultKernel(); err != nil {
			return nil, err
		}
	}
	release := strings.TrimPrefix(filepath.Base(o.Kernel), "vmlinuz-")
	if o.ModulesDir == "" {
		o.ModulesDir = filepath.Join("/lib/modules", release)
	}
	if o.Runc == "" {
		// On PATH, else where Debian's package puts it (root's PATH may
		// lack /usr/sbin).
		if o.Runc, err = exec.LookPath("runc"); err != nil {
			o.Runc = "/usr/sbin/runc"
		}
	}
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	if o.Modules == nil {
		o.Modules = DefaultModules()
	}
	if o.Agent == "" || o.Out == "" {
		return nil, errors.New("guest build: the agent binary and the output directory are required")
	}
	if o.Init == "" {
		o.Init = filepath.Join(filepath.Dir(o.Agent), "cocoon-init")
	}
	for _, b := range []struct{ path, what, hint string }{
		{o.Agent, "cocoon-agent", "build it with CGO_ENABLED=0"},
		{o.Init, "cocoon-init", "build it next to cocoon-agent with CGO_ENABLED=0 (go build -o bin/ ./cmd/...)"},
		{o.Busybox, "busybox", "install Debian's busybox-static"},
	} {
		if err := requireStatic(b.path, b.what, b.hint); err != nil {
			return nil, err
		}
	}
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		return nil, errors.New("guest build needs mksquashfs for the root filesystem: apt-get install squashfs-tools")
	}
	// The root filesystem: agent, runc and its libraries, busybox.
	root := []entry{
		{path: "usr/bin/cocoon-agent", mode: modeFile | 0o755, src: o.Agent},
		{path: "usr/bin/runc", mode: modeFile | 0o755, src: o.Runc},
		{path: "bin/busybox", mode: modeFile | 0o755, src: o.Busybox},
		{path: "bin/sh", mode: modeSymlink | 0o777, link: "busybox"},
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "var", "etc"} {
		root = append(root, entry{path: d, mode: modeDir | 0o755})
	}
	libs, err := sharedLibs(o.Runc)
	if err != nil {
		return nil, fmt.Errorf("runc (%s): %w", o.Runc, err)
	}
	for _, l := range libs {
		root = append(root, entry{path: strings.TrimPrefix(l, "/"), mode: modeFile | 0o755, src: l})
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	img := &Image{Kernel: filepath.Join(o.Out, "vmlinuz"), Initrd: filepath.Join(o.Out, "initramfs.cpio"),
		Rootfs: filepath.Join(o.Out, "rootfs.img"), Release: release}
	if img.Verity, img.RootfsDigest, err = buildRootfs(ctx, img.Rootfs, root); err != nil {
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	// The initramfs: cocoon-init, the modules, and the config that names
	// the root filesystem by its verity root hash (so measuring the
	// initramfs measures the root filesystem too).
	es := []entry{
		{path: "init", mode: modeFile | 0o755, src: o.Init},
		{path: "dev/console", mode: modeChar | 0o600},
	}
	for _, d := range []string{"dev", "proc", "sys", "sysroot"} {
		es = append(es, entry{path: d, mode: modeDir | 0o755})
	}
	var mods []string
	if len(o.Modules) > 0 { // none for a kernel with everything built in
		if mods, err = moduleClosure(o.ModulesDir, o.Modules); err != nil {
			return nil, err
		}
	}
	gc := guestinit.Config{Rootfs: img.Verity, RootfsSerial: guestinit.RootfsSerial}
	for _, m := range mods {
		p := filepath.Join("lib/modules", release, m)
		gc.Modules = append(gc.Modules, p)
		es = append(es, entry{path: p, mode: modeFile | 0o644, src: filepath.Join(o.ModulesDir, m)})
	}
	img.Modules = gc.Modules
	cj, _ := json.MarshalIndent(gc, "", "  ")
	es = append(es, entry{path: guestinit.ConfigPath, mode: modeFile | 0o644, data: append(cj, '\n')})
	if img.KernelDigest, err = copyFile(o.Kernel, img.Kernel); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if img.InitrdDigest, img.Files, err = writeInitramfs(ctx, img.Initrd, es); err != nil {
		return nil, err
	}
	if img.AgentDigest, err = FileDigest(o.Agent); err != nil {
		return nil, err
	}
	mj, _ := json.MarshalIndent(img, "", "  ")
	if err := os.WriteFile(filepath.Join(o.Out, Manifest), append(mj, '\n'), 0o644); err != nil {
		return nil, err
	}
	return img, nil
}

// buildRootfs stages the entries in a directory with fixed modes, makes a
// reproducible uncompressed squashfs of it (sorted, owned by root, dated 0)
// and appends its dm-verity tree. The salt is derived from the content, so
// the same inputs give the same image.
func buildRootfs(ctx context.Context, path string, es []entry) (*guestinit.Verity, string, error) {
	stage, err := os.MkdirTemp(filepath.Dir(path), ".rootfs-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(stage)
	for _, e := range sortEntries(es) {
		p := filepath.Join(stage, e.path)
		switch e.mode & 0o170000 {
		case modeDir:
			err = os.MkdirAll(p, 0o755)
		case modeSymlink:
			err = os.Symlink(e.link, p)
		default:
			if _, err = copyFile(e.src, p); err == nil {
				err = os.Chmod(p, os.FileMode(e.mode&0o777))
			}
		}
		if err != nil {
			return nil, "", err
		}
		if err := os.Chmod(p, os.FileMode(e.mode&0o777)); err != nil && e.mode&0o170000 != modeSymlink {
			return nil, "", err
		}
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "mksquashfs", stage, tmp, "-noappend", "-reproducible", "-all-root",
		"-mkfs-time", "0", "-all-time", "0", "-no-xattrs", "-noI", "-noId", "-noD", "-noF", "-noX",
		"-no-progress", "-quiet", "-processors", "1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("mksquashfs: %v: %s", err, out)
	}
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, "", err
	}
	v, err := verity.Append(f, st.Size(), h.Sum(nil))
	if err != nil {
		return nil, "", err
	}
	if err := f.Sync(); err != nil {
		return nil, "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, "", err
	}
	d, err := FileDigest(path)
	return v, d, err
}

// Load reads a built guest image's manifest from dir.
func Load(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, Manifest))
	if err != nil {
		return nil, err
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("guest image %s: %w", dir, err)
	}
	return &img, nil
}

func writeInitramfs(ctx context.Context, path string, es []entry) (digest string, files int, err error) {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", 0, err
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	cw := &cpioWriter{w: bw}
	for _, e := range sortEntries(es) {
		if err := ctx.Err(); err != nil {
			return "", 0, err
		}
		if e.mode&0o170000 == modeFile {
			files++
		}
		if err := addEntry(cw, e); err != nil {
			return "", 0, fmt.Errorf("initramfs: %s: %w", e.path, err)
		}
	}
	if err := cw.close(); err != nil {
		return "", 0, err
	}
	if err := bw.Flush(); err != nil {
		return "", 0, err
	}
	if err := f.Sync(); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", 0, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), files, nil
}

// addEntry writes one entry, reading a regular file's bytes from e.data or
// from its source file (closed before the next entry is opened).
func addEntry(cw *cpioWriter, e entry) error {
	if e.mode&0o170000 != modeFile {
		return cw.add(e, nil)
	}
	if e.data != nil {
		e.size = int64(len(e.data))
		return cw.add(e, bytes.NewReader(e.data))
	}
	src, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	e.size = st.Size()
	return cw.add(e, src)
}

// FileDigest is sha256:<hex> of a file.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.Create(dst + ".tmp")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), os.Rename(dst+".tmp", dst)
}

func requireStatic(path, what, hint string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s (%s): %w; %s", what, path, err, hint)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s (%s) is dynamically linked; the guest needs a static one: %s", what, path, hint)
		}
	}
	return nil
}
