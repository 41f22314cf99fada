// Command cristart measures pod start through the CRI: RunPodSandbox,
// CreateContainer and StartContainer of a container running `true` (image
// already pulled), until the CRI reports it exited, with the cocoon handler
// (process backend) and with runc, alternately, in the same run, against a
// real containerd. It prints each median and the difference (target: cocoon
// adds at most 150 ms). Needs root and the tools scripts/cri-tools.sh builds.
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"cocoon.dev/cocoon/internal/testcri"
	"cocoon.dev/cocoon/internal/testimage"
)

func main() {
	runs := flag.Int("runs", 15, "pod starts per handler")
	bin := flag.String("bin", "bin", "directory with cocoon, cocoon-agent and containerd-shim-cocoon-v2")
	flag.Parse()
	if err := run(*runs, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "cristart:", err)
		os.Exit(1)
	}
}

func run(runs int, bin string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	tools := testcri.Tools()
	if m := testcri.Missing(tools); m != "" {
		return fmt.Errorf("needs %s", m)
	}
	reg := testimage.NewRegistry()
	defer reg.Close()
	bbl, err := testimage.BusyboxLayer()
	if err != nil {
		return err
	}
	img, err := testimage.Image(v1.Config{Env: []string{"PATH=/bin"}}, bbl)
	if err != nil {
		return err
	}
	_, pinned, err := reg.Push("bench/busybox:1", img)
	if err != nil {
		return err
	}
	pause, err := testimage.Image(v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}, Labels: map[string]string{"cocoon.dev/bench": "pause"}}, bbl)
	if err != nil {
		return err
	}
	pauseRef, _, err := reg.Push("pause:bench", pause)
	if err != nil {
		return err
	}
	ann, err := policyFor(bin, pinned)
	if err != nil {
		return err
	}
	c, err := testcri.Start(testcri.Options{Tools: tools, Bin: bin, Registry: reg.Host(), Pause: pauseRef})
	if err != nil {
		return err
	}
	defer c.Stop()
	conn, err := grpc.NewClient("unix://"+c.Sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, is := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	ctx := context.Background()
	for _, ref := range []string{pinned, pauseRef} {
		if _, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			return fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	logs, err := os.MkdirTemp("", "cristart-logs")
	if err != nil {
		return err
	}
	defer os.RemoveAll(logs)
	b := bench{rt: rt, image: pinned, policy: ann, logs: logs}
	// Warm each handler once (layer caches, page cache), then alternate.
	times := map[string][]time.Duration{}
	handlers := []string{"cocoon", "runc"}
	for i := -1; i < runs; i++ {
		for _, h := range handlers {
			d, err := b.start(ctx, h, i)
			if err != nil {
				return fmt.Errorf("%s: %w\ncontainerd log:\n%s", h, err, c.LogTail(20))
			}
			if i >= 0 {
				times[h] = append(times[h], d)
			}
		}
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[(len(s)-1)/2]
	}
	mc, mr := med(times["cocoon"]), med(times["runc"])
	fmt.Printf("CRI pod start (runp+create+start+exit of true, cached image), median of %d:\n", runs)
	fmt.Printf("  cocoon (process backend): %6.1f ms\n", ms(mc))
	fmt.Printf("  runc:                     %6.1f ms\n", ms(mr))
	fmt.Printf("  difference: cocoon adds %.1f ms (target: at most 150 ms); ratio %.2f\n", ms(mc-mr), float64(mc)/float64(mr))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// policyFor generates the bench pod's policy with the CLI, as a user would.
func policyFor(bin, image string) (string, error) {
	dir, err := os.MkdirTemp("", "cristart")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	pod := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: bench}\nspec:\n  runtimeClassName: cocoon\n  enableServiceLinks: false\n  automountServiceAccountToken: false\n  containers:\n  - {name: t, image: %q, command: [\"true\"]}\n", image)
	p := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(p, []byte(pod), 0o600); err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(bin, "cocoon"), "--root", filepath.Join(dir, "root"), "policy", "generate", "--print", p).Output()
	if err != nil {
		return "", fmt.Errorf("cocoon policy generate: %w", err)
	}
	if !strings.Contains(string(out), "package cocoon.policy") {
		return "", fmt.Errorf("no policy generated")
	}
	return base64.StdEncoding.EncodeToString(out), nil
}

type bench struct {
	rt     runtimeapi.RuntimeServiceClient
	image  string
	policy string
	logs   string
}

// start runs one pod to the exit of its container and returns how long it
// took; the pod is removed afterwards (not timed).
func (b *bench) start(ctx context.Context, handler string, i int) (time.Duration, error) {
	sb := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "bench", Namespace: "default", Uid: fmt.Sprintf("bench-%s-%d", handler, i)},
		Hostname:     "bench",
		LogDirectory: b.logs,
		Annotations:  map[string]string{"cocoon.dev/policy": b.policy},
		Linux:        &runtimeapi.LinuxPodSandboxConfig{},
	}
	cc := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "t"},
		Image:    &runtimeapi.ImageSpec{Image: b.image},
		Command:  []string{"true"},
		LogPath:  fmt.Sprintf("t-%s-%d.log", handler, i),
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}},
	}
	t0 := time.Now()
	pod, err := b.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb, RuntimeHandler: handler})
	if err != nil {
		return 0, fmt.Errorf("run pod: %w", err)
	}
	defer func() {
		_, _ = b.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.GetPodSandboxId()})
		_, _ = b.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.GetPodSandboxId()})
	}()
	ctr, err := b.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.GetPodSandboxId(), Config: cc, SandboxConfig: sb})
	if err != nil {
		return 0, fmt.Errorf("create container: %w", err)
	}
	if _, err := b.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.GetContainerId()}); err != nil {
		return 0, fmt.Errorf("start container: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := b.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctr.GetContainerId()})
		if err != nil {
			return 0, fmt.Errorf("container status: %w", err)
		}
		if st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			if code := st.GetStatus().GetExitCode(); code != 0 {
				return 0, fmt.Errorf("true exited with %d (%s)", code, st.GetStatus().GetReason())
			}
			return time.Since(t0), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the container did not exit in a minute")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
