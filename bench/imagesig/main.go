// Command imagesig measures what trusting an image by its signature costs
// a pod start: `cocoon run` of a container running `true` from a cached
// registry image, its policy pinning the digest, against the same pod
// whose policy trusts the cosign key instead (the agent fetches and
// verifies the signature on every start), alternating in the same run.
// The image is signed by the real cosign CLI (scripts/image-tools.sh).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"cocoon.dev/cocoon/bench/internal/stats"
	"cocoon.dev/cocoon/internal/testimage"
)

func main() {
	runs := flag.Int("runs", 15, "starts of each pod (the median is reported)")
	cocoon := flag.String("cocoon", "bin/cocoon", "the cocoon binary (its agent next to it)")
	cosign := flag.String("cosign", "", "the cosign binary")
	flag.Parse()
	if err := run(*runs, *cocoon, *cosign); err != nil {
		fmt.Fprintln(os.Stderr, "imagesig bench:", err)
		os.Exit(1)
	}
}

func run(runs int, cocoon, cosign string) error {
	work, err := os.MkdirTemp("", "cocoon-imagesig-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	cli := func(args ...string) error {
		out, err := exec.Command(cocoon, append([]string{"--root", root}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("cocoon %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	defer exec.Command(cocoon, "--root", root, "rm", "-f", "bench-pinned", "bench-signed").Run()

	reg := testimage.NewRegistry()
	defer reg.Close()
	img, err := testimage.Busybox()
	if err != nil {
		return err
	}
	tagged, pinned, err := reg.Push("bench/app:1", img)
	if err != nil {
		return err
	}
	sign := func(args ...string) error {
		cmd := exec.Command(cosign, args...)
		cmd.Dir = work
		cmd.Env = []string{"HOME=" + work, "PATH=" + os.Getenv("PATH"), "COSIGN_PASSWORD="}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cosign %s: %v\n%s", args[0], err, out)
		}
		return nil
	}
	if err := sign("generate-key-pair"); err != nil {
		return err
	}
	if err := sign("sign", "--key", "cosign.key", "--use-signing-config=false", "--tlog-upload=false", "--allow-http-registry", "--yes", pinned); err != nil {
		return err
	}
	pod := func(name string) (string, error) {
		p := filepath.Join(work, name+".yaml")
		y := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: t, image: %q, command: [\"true\"]}\n", name, tagged)
		return p, os.WriteFile(p, []byte(y), 0o644)
	}
	pinnedPod, err := pod("bench-pinned")
	if err != nil {
		return err
	}
	signedPod, err := pod("bench-signed")
	if err != nil {
		return err
	}
	if err := cli("policy", "generate", pinnedPod); err != nil {
		return err
	}
	if err := cli("policy", "generate", "--signed-by", filepath.Join(work, "cosign.pub"), signedPod); err != nil {
		return err
	}
	start := func(p, name string) (time.Duration, error) {
		t0 := time.Now()
		err := cli("run", p)
		d := time.Since(t0)
		if err != nil {
			return 0, err
		}
		return d, cli("rm", "-f", name)
	}
	// Warm the layer cache (and both paths) once.
	if _, err := start(pinnedPod, "bench-pinned"); err != nil {
		return err
	}
	if _, err := start(signedPod, "bench-signed"); err != nil {
		return err
	}
	var pinnedT, signedT []time.Duration
	for i := 0; i < runs; i++ {
		d, err := start(pinnedPod, "bench-pinned")
		if err != nil {
			return err
		}
		pinnedT = append(pinnedT, d)
		if d, err = start(signedPod, "bench-signed"); err != nil {
			return err
		}
		signedT = append(signedT, d)
	}
	mp, ms := stats.Median(pinnedT), stats.Median(signedT)
	fmt.Printf("cocoon run (true, cached registry image), policy pins the digest:   median %v over %d runs\n", mp.Round(100*time.Microsecond), runs)
	fmt.Printf("cocoon run (true, cached registry image), policy trusts the signer: median %v over %d runs\n", ms.Round(100*time.Microsecond), runs)
	fmt.Printf("difference: signature verification adds %v to a cached-image start (target: at most 20 ms)\n", (ms - mp).Round(100*time.Microsecond))
	return nil
}
