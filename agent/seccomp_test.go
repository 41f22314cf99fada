package agent

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// TestSeccompApplied: a container's seccomp profile is applied (chmod
// blocked, the filter visible in /proc), and a profile the agent cannot
// apply is refused before anything is created.
func TestSeccompApplied(t *testing.T) {
	cl, ref := agentWithBusybox(t)
	ctx := context.Background()
	bad := &agentv1.ContainerSpec{Name: "bad", Image: ref, Command: []string{"sleep", "100"}, SeccompProfile: []byte(`{"defaultAction":"SCMP_ACT_NOTIFY"}`)}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: bad}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "listener") {
		t.Fatalf("a notify profile: %v, want InvalidArgument naming the listener", err)
	}
	spec := &agentv1.ContainerSpec{Name: "c", Image: ref, Command: []string{"sleep", "100"},
		SeccompProfile: []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}`)}
	if _, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartContainer(ctx, &agentv1.StartContainerRequest{Container: "c"}); err != nil {
		t.Fatal(err)
	}
	r, err := cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "c", Args: []string{"sh", "-c", "grep Seccomp: /proc/self/status; chmod 400 /tmp"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetExitCode() == 0 || !strings.Contains(string(r.GetStdout()), "Seccomp:\t2") || !strings.Contains(string(r.GetStderr()), "not permitted") {
		t.Errorf("exec under the profile: exit %d, stdout %q, stderr %q; want filter mode 2 and chmod refused", r.GetExitCode(), r.GetStdout(), r.GetStderr())
	}
}
