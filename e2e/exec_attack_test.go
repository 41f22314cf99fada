package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// TestExecFieldsPoliced plays the exec attack: the policy allows two
// commands (a shell that reads nothing, a listing), and the host adds
// env (BASH_ENV/ENV pointing at stdin), a working directory or a script on
// stdin to an allowed exec. Each is refused with the field named, and the
// script's side effect never happens.
func TestExecFieldsPoliced(t *testing.T) {
	x := newH(t)
	settings := filepath.Join(t.TempDir(), "settings.json")
	os.WriteFile(settings, []byte(`{"env_patterns": [], "signals": [9, 15], "exec": [["sh"], ["ls", "/data"]]}`), 0o644)
	p := x.pod(`apiVersion: v1
kind: Pod
metadata: {name: execatk}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    image: ` + env.busybox + `
    command: ["sh", "-c", "echo the-secret > /data/secret; exec sleep 1000"]
    volumeMounts: [{name: data, mountPath: /data}]
`)
	x.mustRun(0, "policy", "generate", "--settings", settings, p)
	x.mustRun(0, "run", "-d", p)
	x.waitContainerState("execatk", "app", "running")
	ctx := context.Background()
	cl := x.dialAgent("execatk")
	script := []byte("cat /data/secret; touch /data/pwned\n")
	attacks := []struct {
		name string
		req  *agentv1.ExecProcessRequest
		want string
	}{
		{"stdin script", &agentv1.ExecProcessRequest{Container: "app", Args: []string{"sh"}, Stdin: script}, "stdin of 36 bytes, policy allows none"},
		{"env", &agentv1.ExecProcessRequest{Container: "app", Args: []string{"sh"}, Env: []*agentv1.EnvVar{{Name: "ENV", Value: "/proc/self/fd/0"}, {Name: "BASH_ENV", Value: "/proc/self/fd/0"}}, Stdin: script}, "env = [ENV=<redacted>, BASH_ENV=<redacted>], policy allows none"},
		{"working dir", &agentv1.ExecProcessRequest{Container: "app", Args: []string{"ls", "/data"}, WorkingDir: "/proc/1/root"}, `working_dir = "/proc/1/root", policy allows none`},
		{"timeout", &agentv1.ExecProcessRequest{Container: "app", Args: []string{"ls", "/data"}, TimeoutSeconds: 1 << 30}, "exec timeout"},
		// An interactive exec: the script would be typed into its open
		// stdin (WriteStdin) after the policy saw the request.
		{"interactive stdin", &agentv1.ExecProcessRequest{Container: "app", Args: []string{"sh"}, Detach: true, Terminal: true, OpenStdin: true}, "an open stdin (interactive exec), policy allows none"},
	}
	for _, a := range attacks {
		resp, err := cl.ExecProcess(ctx, a.req)
		if err == nil || !strings.Contains(err.Error(), a.want) {
			t.Errorf("%s: got %v (%q), want a refusal with %q", a.name, err, resp.GetStdout(), a.want)
		}
		if c := status.Code(err); c != codes.PermissionDenied && c != codes.InvalidArgument {
			t.Errorf("%s: code %s", a.name, c)
		}
		if err != nil && strings.Contains(err.Error(), "/proc/self/fd/0") {
			t.Errorf("%s: the refusal repeats an env value: %v", a.name, err)
		}
	}
	// Nor can the container's own stdin be written: the policy gave it
	// none.
	if _, err := cl.WriteStdin(ctx, &agentv1.WriteStdinRequest{Container: "app", Data: script}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "stdin = false") {
		t.Errorf("write to the container's stdin: %v, want a denial", err)
	}
	// The allowed exec works, and shows the script never ran.
	resp, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "app", Args: []string{"ls", "/data"}})
	if err != nil {
		t.Fatal(err)
	}
	if out := string(resp.GetStdout()); !strings.Contains(out, "secret") || strings.Contains(out, "pwned") {
		t.Errorf("ls /data after the attacks: %q", out)
	}
}
