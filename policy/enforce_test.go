package policy

import (
	"context"
	"errors"
	"testing"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// TestEngineStateSurvivesExecRemoval: forgetting a detached exec
// (RemoveContainer with exec_id) leaves the container created and running
// for the rules; removing the container itself does not.
func TestEngineStateSurvivesExecRemoval(t *testing.T) {
	p := &Policy{
		Sandbox:    Sandbox{Name: "pod", Hostname: "pod"},
		Containers: map[string]*Container{"web": {Image: "reg/web:1", RunAsUser: -1, RunAsGroup: -1, ExecAny: true}},
		Images:     map[string]Image{"reg/web:1": {Digest: "sha256:aa"}},
	}
	text, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(func(context.Context, []byte) error { return nil }, nil)
	ctx := context.Background()
	if err := e.Check(ctx, "CreateSandbox", &agentv1.CreateSandboxRequest{Name: "pod", Policy: text}); err != nil {
		t.Fatal(err)
	}
	e.Observe("CreateContainer", &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: "web"}}, nil)
	e.Observe("StartContainer", &agentv1.StartContainerRequest{Container: "web"}, nil)
	exec := &agentv1.ExecProcessRequest{Container: "web", Args: []string{"sh"}, Detach: true}
	if err := e.Check(ctx, "ExecProcess", exec); err != nil {
		t.Fatalf("exec in the running container: %v", err)
	}
	e.Observe("RemoveContainer", &agentv1.RemoveContainerRequest{Container: "web", ExecId: "e1"}, nil)
	if err := e.Check(ctx, "ExecProcess", exec); err != nil {
		t.Fatalf("exec after an exec was removed: %v", err)
	}
	e.Observe("RemoveContainer", &agentv1.RemoveContainerRequest{Container: "web"}, nil)
	if err := e.Check(ctx, "ExecProcess", exec); !errors.Is(err, ErrDenied) {
		t.Fatalf("exec after the container was removed: %v, want a denial", err)
	}
}
