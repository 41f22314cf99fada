package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/layerdisk"
	"cocoon.dev/cocoon/sandbox"
)

// agentOf connects to the agent of the one cocoon sandbox this containerd
// runs for the test's pod, as the host may.
func (c *cri) agentOf(t *testing.T, podID string) *sandbox.Client {
	t.Helper()
	socks, _ := filepath.Glob(filepath.Join(c.Root, "cri", "*", "agent.sock"))
	for _, s := range socks {
		cl, err := sandbox.DialSocket(context.Background(), s)
		if err != nil {
			continue
		}
		// The sandbox of this pod is the one whose bundle names it.
		b, _ := os.ReadFile(filepath.Join(c.Dir, "state", "io.containerd.runtime.v2.task", "k8s.io", podID, "cocoon-sandbox-dir"))
		if strings.TrimSpace(string(b)) == filepath.Dir(s) {
			t.Cleanup(func() { cl.Close() })
			return cl
		}
		cl.Close()
	}
	t.Fatalf("no agent socket for pod %s among %v", podID, socks)
	return nil
}

// TestCRITwoContainersShareLocalhost: two containers of one pod talk over
// loopback, and the host reaches the pod on its pod IP, through the
// network namespace containerd made and CNI wired.
func TestCRITwoContainersShareLocalhost(t *testing.T) {
	c := needCRI(t)
	web := []string{"/echo", "-listen", "0.0.0.0:8080"}
	client := "until /echo -get http://127.0.0.1:8080/over-loopback; do sleep 0.2; done; exec sleep 1000"
	yaml := criPodYAML("cri-net", fmt.Sprintf(`  containers:
  - name: web
    image: %[1]s
    command: ["/echo", "-listen", "0.0.0.0:8080"]
  - name: client
    image: %[1]s
    command: ["/bin/sh", "-c", %[2]q]
`, env.echo, client))
	p := newCRIPod(t, "cri-net", yaml, map[string]map[string]any{
		"web":    {"image": map[string]any{"image": env.echo}, "command": web},
		"client": {"image": map[string]any{"image": env.echo}, "command": []string{"/bin/sh", "-c", client}},
	})
	podID := c.runPod(t, p)
	c.createStart(t, podID, p, "web")
	cl := c.createStart(t, podID, p, "client")
	c.waitLogs(t, cl, 20*time.Second, func(out string) bool { return strings.Contains(out, "echo from cri-net: over-loopback") })
	ip := c.podIP(t, podID)
	if !strings.HasPrefix(ip, c.Subnet+".") {
		t.Fatalf("pod IP %s is not on the test network %s.0/24", ip, c.Subnet)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + ip + ":8080/from-host")
	if err != nil {
		t.Fatalf("the host cannot reach the pod on %s: %v", ip, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "echo from cri-net: from-host") {
		t.Fatalf("pod answered %q", body)
	}
}

// TestCRIPolicyDenials: a container whose command is not the policy's is
// refused at create, with the policy's explanation in crictl's error, and
// nothing is created in the sandbox; an exec the policy does not allow
// ends with status 126 and the explanation, and does not run.
func TestCRIPolicyDenials(t *testing.T) {
	c := needCRI(t)
	cmd := "while :; do sleep 0.2; done"
	p := newCRIPod(t, "cri-deny", hostPodYAML("cri-deny", env.pinned, cmd), map[string]map[string]any{
		"main": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", "echo pwned; " + cmd}},
	})
	podID := c.runPod(t, p)
	// The CRI's CreateContainer is bookkeeping in containerd; the runtime
	// sees the container when it is started, and the policy refuses it
	// there.
	bad := c.must(t, "create", "--with-pull", podID, p.containers["main"], p.podConfig)
	_, errs, code := c.crictl("start", bad)
	if code == 0 {
		t.Fatal("a container with a changed command was started")
	}
	for _, want := range []string{"PermissionDenied", "args[2] = ", "policy allows"} {
		if !strings.Contains(errs, want) {
			t.Errorf("crictl's error does not say %q:\n%s", want, errs)
		}
	}
	c.must(t, "rm", bad)
	ag := c.agentOf(t, podID)
	lc, err := ag.ListContainers(context.Background(), &agentv1.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lc.GetContainers()); n != 0 {
		t.Fatalf("the sandbox has %d containers after the denial", n)
	}

	// The policy's own command runs; an exec it does not allow is refused.
	ok := newCRIPod(t, "cri-deny", hostPodYAML("cri-deny", env.pinned, cmd), map[string]map[string]any{
		"main": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd}},
	})
	ctr := c.createStart(t, podID, ok, "main")
	c.waitState(t, ctr, "CONTAINER_RUNNING", 30*time.Second)
	out, errs, code := c.crictl("exec", ctr, "/bin/sh", "-c", "echo pwned > /proc/1/fd/1; echo pwned")
	if code == 0 || !strings.Contains(errs, "exit code 126") || strings.Contains(out, "pwned") || !strings.Contains(errs, "exec refused") || !strings.Contains(errs, "policy allows") {
		t.Fatalf("exec not in the policy: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	logs, _, _ := c.crictl("logs", ctr)
	if strings.Contains(logs, "pwned") {
		t.Fatal("the refused exec ran")
	}
}

// TestCRIExecAllowed: an exec the policy allows runs in the container, its
// output and exit status reach crictl.
func TestCRIExecAllowed(t *testing.T) {
	c := needCRI(t)
	settings := filepath.Join(t.TempDir(), "settings.json")
	if err := os.WriteFile(settings, []byte(`{"exec": [["/bin/sh", "-c", "cat /etc/hostname; exit 3"], ["/bin/cat", "/etc/hostname"]]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := "exec sleep 1000"
	p := newCRIPod(t, "cri-exec", hostPodYAML("cri-exec", env.pinned, cmd), map[string]map[string]any{
		"main": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd}},
	}, "--settings", settings)
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "main")
	c.waitState(t, ctr, "CONTAINER_RUNNING", 30*time.Second)
	// crictl exits 1 and names the command's exit status.
	out, errs, code := c.crictl("exec", ctr, "/bin/sh", "-c", "cat /etc/hostname; exit 3")
	if code != 1 || !strings.Contains(errs, "exit code 3") || strings.TrimSpace(out) != "cri-exec" {
		t.Fatalf("exec: exit %d, stdout %q, stderr %q; want 3 and the hostname", code, out, errs)
	}
	out, errs, code = c.crictl("exec", "--sync", ctr, "/bin/cat", "/etc/hostname")
	if code != 0 || strings.TrimSpace(out) != "cri-exec" {
		t.Fatalf("exec --sync: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestCRISecretAndEncryptedVolume: a CRI-created pod gets a secret from the
// key broker through the in-pod API, and its encrypted volume (a CSI volume
// in Kubernetes, which kubelet would mount at .../kubernetes.io~csi/NAME/mount)
// is opened inside the sandbox with the broker's key.
func TestCRISecretAndEncryptedVolume(t *testing.T) {
	c := needCRI(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	x := newH(t)
	// The broker trusts the simulated secure processor the runtime uses.
	x.simState = filepath.Join(c.Root, "sim")
	state, addr, img, caB64 := x.volumeWithKey()
	secret := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(secret, []byte("the-cri-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	x.mustRun(0, "kbs", "put", "kbs:///app/db/password", secret, "--state", state)
	cmd := "echo secret=$(wget -qO- http://127.0.0.1:8006/cdh/resource/app/db/password); cat /data/note.txt; echo; exec sleep 1000"
	yaml := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: cri-secret
  annotations:
    cocoon.dev/kbs: https://%s
    cocoon.dev/kbs-ca: %s
spec:
  runtimeClassName: cocoon
  enableServiceLinks: false
  automountServiceAccountToken: false
  volumes:
  - name: data
    csi:
      driver: volume.cocoon.dev
      volumeAttributes: {source: %q, key: "kbs:///app/volume/key"}
  containers:
  - name: app
    image: %s
    command: ["/bin/sh", "-c", %q]
    volumeMounts: [{name: data, mountPath: /data}]
`, addr, caB64, img, env.pinned, cmd)
	kubeletDir := filepath.Join(t.TempDir(), "pods", "cri-secret-uid", "volumes", "kubernetes.io~csi", "data", "mount")
	if err := os.MkdirAll(kubeletDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := newCRIPod(t, "cri-secret", yaml, map[string]map[string]any{
		"app": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd},
			"mounts": []any{map[string]any{"container_path": "/data", "host_path": kubeletDir}}},
	})
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "app")
	c.waitLogs(t, ctr, 30*time.Second, func(out string) bool {
		return strings.Contains(out, "secret=the-cri-password") && strings.Contains(out, "note from the data owner")
	})
	// The host's directory was never mounted: the volume is the sandbox's.
	if ents, _ := os.ReadDir(kubeletDir); len(ents) != 0 {
		t.Errorf("the kubelet directory on the host has %d entries", len(ents))
	}
}

// TestCRISharedPIDNamespace: with shareProcessNamespace the pod's
// containers see each other's processes (the agent keeps the namespace);
// the policy pins it.
func TestCRISharedPIDNamespace(t *testing.T) {
	c := needCRI(t)
	watcher := "while :; do ps; sleep 0.2; done"
	yaml := criPodYAML("cri-pid", fmt.Sprintf(`  shareProcessNamespace: true
  containers:
  - name: sleeper
    image: %[1]s
    command: ["/bin/sleep", "1001"]
  - name: watcher
    image: %[1]s
    command: ["/bin/sh", "-c", %[2]q]
`, env.pinned, watcher))
	pod := map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 0}}}
	p := newCRIPod(t, "cri-pid", yaml, map[string]map[string]any{
		"sleeper": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sleep", "1001"}, "linux": pod},
		"watcher": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", watcher}, "linux": pod},
	})
	podID := c.runPod(t, p)
	c.createStart(t, podID, p, "sleeper")
	w := c.createStart(t, podID, p, "watcher")
	c.waitLogs(t, w, 20*time.Second, func(out string) bool { return strings.Contains(out, "sleep 1001") })
}

// TestVMUnderCRI: the same CRI lifecycle with the qemu backend (software
// emulation here): the VM's NIC is bridged into the pod's network
// namespace, so the pod answers on its pod IP; logs, an allowed exec and
// stop/rmp work, and the VM is gone afterwards.
func TestVMUnderCRI(t *testing.T) {
	c := needCRI(t)
	vmReady(t)
	x := &h{t: t, root: c.Root}
	x.guestBuild(filepath.Join(env.bin, "cocoon-agent"))
	settings := filepath.Join(t.TempDir(), "settings.json")
	if err := os.WriteFile(settings, []byte(`{"exec": [["/bin/cat", "/etc/hostname"]]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	web := []string{"/echo", "-listen", "0.0.0.0:8080"}
	yaml := criPodYAML("cri-vm", fmt.Sprintf(`  containers:
  - name: web
    image: %s
    command: ["/echo", "-listen", "0.0.0.0:8080"]
    resources: {limits: {memory: 64Mi}}
`, env.echo))
	p := newCRIPod(t, "cri-vm", yaml, map[string]map[string]any{
		"web": {"image": map[string]any{"image": env.echo}, "command": web,
			"linux": map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 64 << 20},
				"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}}},
	}, "--settings", settings)
	podID := c.must(t, "runp", "--runtime", "cocoon-vm", p.podConfig)
	t.Cleanup(func() { c.crictl("rmp", "-f", podID) })
	ctr := c.createStart(t, podID, p, "web")
	c.waitLogs(t, ctr, 2*time.Minute, func(out string) bool { return strings.Contains(out, "echo server listening") })
	ip := c.podIP(t, podID)
	hc := &http.Client{Timeout: 10 * time.Second}
	var body []byte
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := hc.Get("http://" + ip + ":8080/from-host")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the host cannot reach the VM pod on %s: %v", ip, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(string(body), "echo from cri-vm: from-host") {
		t.Fatalf("pod answered %q", body)
	}
	if out, errs, code := c.crictl("exec", ctr, "/bin/cat", "/etc/hostname"); code != 0 || strings.TrimSpace(out) != "cri-vm" {
		t.Fatalf("exec: %d %q %q", code, out, errs)
	}
	// The image's layers came from verified disks the node built when the
	// sandbox started (the policy names the pod's images before any
	// container does): the sandbox holds them, the agent mounted them.
	held := func() []layerdisk.Entry {
		var list []layerdisk.Entry
		out, _ := x.mustRun(0, "image", "disks", "ls", "-o", "json")
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("image disks ls: %v %s", err, out)
		}
		return list
	}
	if list := held(); len(list) != 2 || list[0].Users != 1 || list[1].Users != 1 {
		t.Errorf("layer disks while the pod runs: %+v, want the image's 2 layers held by 1 sandbox", list)
	}
	logs, _ := filepath.Glob(filepath.Join(c.Root, "cri", "*", "agent.log"))
	agentLog := ""
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		agentLog += string(b)
	}
	if !strings.Contains(agentLog, `"disks":2`) {
		t.Errorf("the agent did not take the layers from the disks:\n%s", agentLog)
	}
	c.must(t, "stop", "--timeout", "2", ctr)
	c.must(t, "rmp", "-f", podID)
	if list := held(); len(list) != 2 || list[0].Users != 0 || list[1].Users != 0 {
		t.Errorf("layer disks after rmp: %+v, want held by none", list)
	}
	if qemus := descendantsNamed("qemu-system"); len(qemus) != 0 {
		for _, pid := range qemus {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), c.Root) {
				t.Fatalf("QEMU %d still runs after rmp", pid)
			}
		}
	}
}

// descendantsNamed lists processes whose command starts with name.
func descendantsNamed(name string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.HasPrefix(string(b), name) {
			continue
		}
		var pid int
		fmt.Sscanf(e.Name(), "%d", &pid)
		out = append(out, pid)
	}
	return out
}

// TestCRIDeploymentReplicas: a Deployment's policy runs every replica,
// each with the hostname its controller gave it (the template pins none),
// while the command stays pinned.
func TestCRIDeploymentReplicas(t *testing.T) {
	c := needCRI(t)
	cmd := "echo replica $(hostname) $HOSTNAME; exec sleep 1000"
	yaml := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      runtimeClassName: cocoon
      enableServiceLinks: false
      automountServiceAccountToken: false
      containers:
      - name: app
        image: %s
        command: ["/bin/sh", "-c", %q]
`, env.pinned, cmd)
	ann := policyAnnotation(t, yaml)
	for _, replica := range []string{"web-7d9f8-abc12", "web-7d9f8-def34"} {
		p := &criPod{name: replica, containers: map[string]string{}}
		p.podConfig = writeJSON(t, replica+".json", map[string]any{
			"metadata":      map[string]any{"name": replica, "namespace": "default", "uid": replica + "-uid"},
			"hostname":      replica,
			"log_directory": t.TempDir(),
			"annotations":   map[string]string{"cocoon.dev/policy": ann},
		})
		p.containers["app"] = writeJSON(t, "app.json", map[string]any{
			"metadata": map[string]any{"name": "app"}, "image": map[string]any{"image": env.pinned},
			"command": []string{"/bin/sh", "-c", cmd}, "log_path": "app.log",
			"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}},
		})
		podID := c.runPod(t, p)
		ctr := c.createStart(t, podID, p, "app")
		want := "replica " + replica + " " + replica
		c.waitLogs(t, ctr, 20*time.Second, func(out string) bool { return strings.Contains(out, want) })
	}
}

// TestCRISupplementalGroups: the pod's fsGroup and supplementalGroups
// (which kubelet passes as the container's supplementary groups) are pinned
// by the policy and applied by the agent.
func TestCRISupplementalGroups(t *testing.T) {
	c := needCRI(t)
	cmd := "echo groups $(id -G); exec sleep 1000"
	yaml := criPodYAML("cri-groups", fmt.Sprintf(`  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000, supplementalGroups: [3000]}
  containers:
  - name: app
    image: %s
    command: ["/bin/sh", "-c", %q]
`, env.pinned, cmd))
	sc := map[string]any{"run_as_user": map[string]any{"value": 1000}, "run_as_group": map[string]any{"value": 1000},
		"supplemental_groups": []int{3000, 2000}, "namespace_options": map[string]any{"pid": 1}}
	p := newCRIPod(t, "cri-groups", yaml, map[string]map[string]any{
		"app": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd}, "linux": map[string]any{"security_context": sc}},
	})
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "app")
	c.waitLogs(t, ctr, 20*time.Second, func(out string) bool {
		return strings.Contains(out, "groups 1000 2000 3000") || strings.Contains(out, "groups 1000 3000 2000")
	})
}

// TestCRIOOMKilled: a container killed by the kernel's OOM killer at its
// memory limit is reported as OOMKilled with status 137.
func TestCRIOOMKilled(t *testing.T) {
	c := needCRI(t)
	cmd := "dd if=/dev/zero of=/dev/null bs=128M count=1"
	yaml := criPodYAML("cri-oom", fmt.Sprintf(`  containers:
  - name: hog
    image: %s
    command: ["/bin/sh", "-c", %q]
    resources: {limits: {memory: 32Mi}}
`, env.pinned, cmd))
	p := newCRIPod(t, "cri-oom", yaml, map[string]map[string]any{
		"hog": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd},
			"linux": map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 32 << 20},
				"security_context": map[string]any{"namespace_options": map[string]any{"pid": 1}}}},
	})
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "hog")
	c.waitState(t, ctr, "CONTAINER_EXITED", 30*time.Second)
	out := c.must(t, "inspect", "-o", "go-template", "--template", "{{.status.exitCode}} {{.status.reason}}", ctr)
	if out != "137 OOMKilled" {
		t.Fatalf("exit code and reason %q, want 137 OOMKilled", out)
	}
}

// TestCRISysctls: the pod's sysctls (pinned by the policy) and the
// runtime's two defaults reach the sandbox's namespaces, which the
// containers share; no pause container sets them.
func TestCRISysctls(t *testing.T) {
	c := needCRI(t)
	cmd := "echo range $(cat /proc/sys/net/ipv4/ip_local_port_range) start $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); exec sleep 1000"
	yaml := criPodYAML("cri-sysctl", fmt.Sprintf(`  securityContext:
    sysctls: [{name: net.ipv4.ip_local_port_range, value: "30000 40000"}]
  containers:
  - name: app
    image: %s
    command: ["/bin/sh", "-c", %q]
`, env.pinned, cmd))
	p := newCRIPod(t, "cri-sysctl", yaml, map[string]map[string]any{
		"app": {"image": map[string]any{"image": env.pinned}, "command": []string{"/bin/sh", "-c", cmd}},
	})
	p.setPodConfig(t, "linux", map[string]any{"sysctls": map[string]string{"net.ipv4.ip_local_port_range": "30000 40000"}})
	podID := c.runPod(t, p)
	ctr := c.createStart(t, podID, p, "app")
	c.waitLogs(t, ctr, 20*time.Second, func(out string) bool { return strings.Contains(out, "range 30000 40000 start 0") })
	// A sysctl the policy does not pin is refused, and the pod does not start.
	bad := newCRIPod(t, "cri-sysctl", yaml, map[string]map[string]any{})
	bad.setPodConfig(t, "linux", map[string]any{"sysctls": map[string]string{"net.ipv4.ip_local_port_range": "1024 2000"}})
	bad.setPodConfig(t, "metadata", map[string]any{"name": "cri-sysctl", "namespace": "default", "uid": "cri-sysctl-bad"})
	_, errs, code := c.crictl("runp", "--runtime", "cocoon", bad.podConfig)
	if code == 0 || !strings.Contains(errs, `sysctl net.ipv4.ip_local_port_range = \"1024 2000\" is not allowed by the policy`) {
		t.Fatalf("an unpinned sysctl: exit %d\n%s", code, errs)
	}
}
