package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func encPod(name, image, ca, addr, source, key string, readOnly bool, command string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations:
    cocoon.dev/kbs: https://%s
    cocoon.dev/kbs-ca: %s
spec:
  restartPolicy: Never
  volumes:
  - name: data
    csi:
      driver: volume.cocoon.dev
      readOnly: %v
      volumeAttributes: {source: %q, key: %q}
  containers:
  - name: app
    image: %s
    command: ["sh", "-c", %q]
    volumeMounts: [{name: data, mountPath: /data}]
`, name, addr, ca, readOnly, source, key, image, command)
}

// volumeWithKey starts a key broker and creates a LUKS2 volume holding
// note.txt whose key is the broker's kbs:///app/volume/key; it returns the
// broker's state and address, the image and the broker's CA (base64).
func (x *h) volumeWithKey() (state, addr, img, caB64 string) {
	x.t.Helper()
	state, addr = filepath.Join(x.t.TempDir(), "kbs"), freeAddr(x.t)
	x.startKBS(state, addr, "--allow-sim")
	dir := x.t.TempDir()
	os.MkdirAll(filepath.Join(dir, "src"), 0o755)
	os.WriteFile(filepath.Join(dir, "src", "note.txt"), []byte("note from the data owner"), 0o644)
	img = filepath.Join(dir, "vol.img")
	x.mustRun(0, "volume", "create", "--size", "16M", "--fs", "ext4", "--kdf", "pbkdf2", "--kbs-resource", "kbs:///app/volume/key", "--state", state, "--from", filepath.Join(dir, "src"), img)
	ca, _ := os.ReadFile(filepath.Join(state, "ca.pem"))
	return state, addr, img, base64.StdEncoding.EncodeToString(ca)
}

// TestEncryptedVolumeInPod: a volume created with its key in the broker is
// opened inside the sandbox; the app reads the file; what it writes reaches
// the image only encrypted; a read-only volume refuses writes; a wrong key
// starts nothing and mounts nothing.
func TestEncryptedVolumeInPod(t *testing.T) {
	x := newH(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	state, addr, img, caB64 := x.volumeWithKey()
	out, errs := x.mustRun(0, "run", x.pod(encPod("enc", env.busybox, caB64, addr, img, "kbs:///app/volume/key", false,
		"cat /data/note.txt; echo; echo VOLMARKER-through-the-mount > /data/marker.txt; sync")))
	if !strings.Contains(out, "note from the data owner") {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	raw, _ := os.ReadFile(img)
	if bytes.Contains(raw, []byte("VOLMARKER")) || bytes.Contains(raw, []byte("note from the data owner")) {
		t.Fatal("the image on the host holds plaintext")
	}
	x.mustRun(0, "rm", "enc")
	if b, _ := exec.Command("losetup", "-a").Output(); bytes.Contains(b, []byte(filepath.Base(x.root))) {
		t.Errorf("loop devices left: %s", b)
	}
	if n := mountsUnder(x.root); n != 0 {
		t.Errorf("%d mounts left", n)
	}
	// Read-only: the marker is there (written encrypted), writes fail.
	out, _ = x.mustRun(0, "run", x.pod(encPod("encro", env.busybox, caB64, addr, img, "kbs:///app/volume/key", true,
		"cat /data/marker.txt; touch /data/x 2>/dev/null || echo read-only-refused")))
	if !strings.Contains(out, "VOLMARKER-through-the-mount") || !strings.Contains(out, "read-only-refused") {
		t.Errorf("read-only volume: %s", out)
	}
	// A wrong key: nothing starts, nothing is mounted.
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not the key"), 0o600)
	x.mustRun(0, "kbs", "put", "kbs:///app/volume/wrong", wrong, "--state", state)
	out, errs = x.mustRun(125, "run", x.pod(encPod("encbad", env.busybox, caB64, addr, img, "kbs:///app/volume/wrong", false, "echo must-not-run")))
	if strings.Contains(out, "must-not-run") || !strings.Contains(errs, "no keyslot opens") {
		t.Errorf("wrong key: stdout %q stderr %q", out, errs)
	}
	if n := mountsUnder(x.root); n != 0 {
		t.Errorf("%d mounts left after a wrong key", n)
	}
}

// TestEncryptedVolumeFromURL: the image is on an HTTP server (a static file
// server), read by the agent with range requests through the sandbox's
// egress channel; the app reads the file; the volume is read-only.
func TestEncryptedVolumeFromURL(t *testing.T) {
	x := newH(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	_, addr, img, caB64 := x.volumeWithKey()
	srvURL, ranged := serveRanges(t, img)
	out, errs := x.mustRun(0, "run", x.pod(encPod("encurl", env.busybox, caB64, addr, srvURL, "kbs:///app/volume/key", true,
		"cat /data/note.txt; echo; touch /data/x 2>/dev/null || echo read-only-refused")))
	if !strings.Contains(out, "note from the data owner") || !strings.Contains(out, "read-only-refused") {
		t.Fatalf("stdout %q stderr %q", out, errs)
	}
	if ranged.Load() == 0 {
		t.Error("the server saw no range request")
	}
	x.mustRun(0, "rm", "encurl")
	if n := mountsUnder(x.root); n != 0 {
		t.Errorf("%d mounts left", n)
	}
	// Writable is refused before anything starts.
	_, errs = x.mustRun(125, "run", x.pod(encPod("encurlrw", env.busybox, caB64, addr, srvURL, "kbs:///app/volume/key", false, "echo must-not-run")))
	if !strings.Contains(errs, "set csi.readOnly: true") {
		t.Errorf("writable URL volume: %s", errs)
	}
}

// serveRanges serves the file at path over HTTP as a static file server
// does (with ranges) and counts the range requests.
func serveRanges(t *testing.T, path string) (string, *atomic.Int64) {
	var ranged atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
		}
		http.ServeFile(w, r, path)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/vol.img", &ranged
}

// TestVolumeOpenCloseOnHost: `cocoon volume open` serves a volume outside
// any pod, `close` stops exactly its server (named by PID and start time)
// and unmounts it; a state whose PID now names another process is
// forgotten without a signal reaching that process.
func TestVolumeOpenCloseOnHost(t *testing.T) {
	x := newH(t)
	dir := t.TempDir()
	key, img, mnt := filepath.Join(dir, "key"), filepath.Join(dir, "v.img"), filepath.Join(dir, "mnt")
	os.WriteFile(key, []byte("host-volume-key-0123456789abcdef"), 0o600)
	os.MkdirAll(filepath.Join(dir, "src"), 0o755)
	os.WriteFile(filepath.Join(dir, "src", "f"), []byte("plain-host-marker"), 0o644)
	os.Mkdir(mnt, 0o755)
	x.mustRun(0, "volume", "create", "--size", "16M", "--fs", "ext4", "--kdf", "pbkdf2", "--key-file", key, "--from", filepath.Join(dir, "src"), img)
	x.mustRun(0, "volume", "open", "--key-file", key, img, mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "plain-host-marker" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
	x.mustRun(0, "volume", "close", mnt)
	if _, err := os.Stat(filepath.Join(mnt, "f")); err == nil {
		t.Error("still mounted after close")
	}
	_, errs := x.mustRun(1, "volume", "close", mnt)
	if !strings.Contains(errs, "not a volume opened by cocoon") {
		t.Errorf("second close: %s", errs)
	}
	// A stale state naming a live process of someone else (this test's
	// own sleep, recorded with another start time): close forgets the state
	// and the process lives on.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	x.mustRun(0, "volume", "open", "--key-file", key, img, mnt)
	states, _ := filepath.Glob(filepath.Join(x.root, "volumes", "*.json"))
	if len(states) != 1 {
		t.Fatalf("volume states: %v", states)
	}
	b, _ := os.ReadFile(states[0])
	var st map[string]any
	json.Unmarshal(b, &st)
	realPID := int(st["pid"].(float64))
	st["pid"], st["start"] = other.Process.Pid, 1
	b, _ = json.Marshal(st)
	os.WriteFile(states[0], b, 0o600)
	x.mustRun(0, "volume", "close", mnt)
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("close signalled an unrelated process: %v", err)
	}
	// Clean up the real server the forged state no longer named.
	syscall.Kill(realPID, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(realPID, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
}
