package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/sandbox"
)

// TestMaliciousHost plays a malicious host against a running agent that
// enforces a generated policy: every attack is denied with a clear reason,
// nothing it asked for runs, and the allowed requests still work.
func TestMaliciousHost(t *testing.T) {
	x := newH(t)
	good, err := testimageBusyboxWithMarker("good")
	if err != nil {
		t.Fatal(err)
	}
	ref, _, err := env.reg.Push("adv/img:v1", good)
	if err != nil {
		t.Fatal(err)
	}
	p := x.pod(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: adv}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    image: %[1]s
    command: ["sh", "-c", "echo app-started; exec sleep 1000"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: job
    image: %[1]s
    command: ["sh", "-c", "echo job-ran"]
`, ref))
	x.mustRun(0, "policy", "generate", p)
	x.mustRun(0, "run", "-d", p)
	x.waitContainerState("adv", "app", "running")
	ctx := context.Background()
	cl := x.dialAgent("adv")
	// Wait for job to finish, then remove it as a host may.
	for i := 0; ; i++ {
		w, err := cl.WaitContainer(ctx, &agentv1.WaitContainerRequest{Container: "job", TimeoutMs: 5000})
		if err == nil && w.GetExited() {
			break
		}
		if i == 12 {
			t.Fatalf("job did not exit within a minute: %v", err)
		}
	}
	x.waitContainerState("adv", "job", "exited")
	if _, err := cl.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{Container: "job"}); err != nil {
		t.Fatal(err)
	}
	jobSpec := func() *agentv1.ContainerSpec {
		return &agentv1.ContainerSpec{Name: "job", Image: ref, Command: []string{"sh", "-c", "echo job-ran"}}
	}
	denied := func(what string, err error, want string) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a denial containing %q", what, err, want)
		}
	}
	create := func(mut func(*agentv1.ContainerSpec)) error {
		s := jobSpec()
		mut(s)
		_, err := cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: s})
		return err
	}

	_, err = cl.PullImage(ctx, &agentv1.PullImageRequest{Image: env.pinned})
	denied("unknown image", err, "pull_image: image")
	denied("changed command", create(func(s *agentv1.ContainerSpec) { s.Command = []string{"sh", "-c", "cat /etc/shadow"} }),
		`create_container "job": args[2] = "cat /etc/shadow", policy allows "echo job-ran"`)
	denied("changed args", create(func(s *agentv1.ContainerSpec) { s.Args = []string{"extra"} }), `create_container "job": args = `)
	err = create(func(s *agentv1.ContainerSpec) { s.Env = []*agentv1.EnvVar{{Name: "LD_PRELOAD", Value: "/tmp/evil.so"}} })
	denied("injected env", err, `env LD_PRELOAD=<redacted> is not allowed by the policy`)
	if err != nil && strings.Contains(err.Error(), "evil.so") {
		t.Errorf("a denial leaked an env value: %v", err)
	}
	denied("extra mount", create(func(s *agentv1.ContainerSpec) {
		s.Mounts = []*agentv1.VolumeMount{{Volume: "data", MountPath: "/host"}}
	}), `create_container "job": mounts = `)
	denied("privileged", create(func(s *agentv1.ContainerSpec) { s.Privileged = true }), "privileged = true, policy allows false")
	denied("added capability", create(func(s *agentv1.ContainerSpec) { s.CapabilitiesAdd = []string{"SYS_ADMIN"} }), "CAP_SYS_ADMIN")
	denied("other user", create(func(s *agentv1.ContainerSpec) { s.HasRunAsUser, s.RunAsUser = true, 0 }), "run_as_user = 0, policy allows -1")
	denied("unknown container", create(func(s *agentv1.ContainerSpec) { s.Name = "intruder" }), `no such container in the policy`)
	_, err = cl.CreateContainer(ctx, &agentv1.CreateContainerRequest{Spec: &agentv1.ContainerSpec{Name: "app", Image: ref, Command: []string{"sh", "-c", "echo app-started; exec sleep 1000"}, Mounts: []*agentv1.VolumeMount{{Volume: "data", MountPath: "/data"}}}})
	denied("create twice", err, `create_container "app": the container already exists`)
	_, err = cl.ExecProcess(ctx, &agentv1.ExecProcessRequest{Container: "app", Args: []string{"/bin/sh"}})
	denied("exec shell", err, `exec_process "app": args = ["/bin/sh"], policy allows no exec`)
	_, err = cl.SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: "app", Signal: 10})
	denied("signal", err, "signal = 10, policy allows [1,2,3,9,15]")
	_, err = cl.CreateSandbox(ctx, &agentv1.CreateSandboxRequest{Name: "adv", Policy: []byte("package cocoon.policy\n")})
	denied("replace policy", err, "a policy is already loaded")

	// The same tag now points at another image: the pull is allowed (the
	// reference is in the policy) but the container is not.
	evil, _ := testimageBusyboxWithMarker("evil")
	if _, _, err := env.reg.Push("adv/img:v1", evil); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PullImage(ctx, &agentv1.PullImageRequest{Image: ref}); err != nil {
		t.Fatalf("pull of the retagged image: %v", err)
	}
	denied("other digest", create(func(*agentv1.ContainerSpec) {}), `create_container "job": image digest = `)

	// Nothing the attacks asked for exists or runs.
	ls, err := cl.ListContainers(ctx, &agentv1.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.GetContainers()) != 1 || ls.GetContainers()[0].GetName() != "app" || ls.GetContainers()[0].GetState() != "running" {
		t.Errorf("containers after the attacks: %v", ls.GetContainers())
	}
	// Allowed requests still work: logs of app, and job with the good image.
	logs, err := cl.ReadLogs(ctx, &agentv1.ReadLogsRequest{Container: "app", WaitMs: 2000})
	if err != nil || !strings.Contains(string(logs.GetData()), "app-started") {
		t.Errorf("logs: %q %v", logs.GetData(), err)
	}
	good2, _ := testimageBusyboxWithMarker("good")
	if _, _, err := env.reg.Push("adv/img:v1", good2); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PullImage(ctx, &agentv1.PullImageRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if err := create(func(*agentv1.ContainerSpec) {}); err != nil {
		t.Fatalf("the policy's own container: %v", err)
	}
	if _, err := cl.StartContainer(ctx, &agentv1.StartContainerRequest{Container: "job"}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.SignalContainer(ctx, &agentv1.SignalContainerRequest{Container: "app", Signal: 15})
	if err != nil {
		t.Errorf("allowed signal: %v", err)
	}
}

func (x *h) waitContainerState(pod, name, state string) {
	x.t.Helper()
	for i := 0; i < 600; i++ {
		for _, c := range x.status(pod).Containers {
			if c.Name == name && c.State == state {
				return
			}
		}
		sleep()
	}
	x.t.Fatalf("container %s/%s never became %s", pod, name, state)
}

// TestDisabledStdio: with --disable-stdio the host cannot read output.
func TestDisabledStdio(t *testing.T) {
	x := newH(t)
	p := x.pod(simplePod("quiet", env.busybox, "Never", "echo secret-output; exec sleep 1000"))
	x.mustRun(0, "policy", "generate", "--disable-stdio", p)
	x.mustRun(0, "run", "-d", p)
	x.waitPhase("quiet", sandbox.PhaseRunning)
	_, errs := x.mustRun(1, "logs", "quiet")
	if !strings.Contains(errs, `read_logs "main": stdio = false`) || strings.Contains(errs, "secret-output") {
		t.Errorf("logs with stdio disabled: %s", errs)
	}
}

// TestRunRefusesPodWithoutPolicy: no annotation, no --generate-policy.
func TestRunRefusesPodWithoutPolicy(t *testing.T) {
	x := newH(t)
	p := x.pod(simplePod("nopolicy", env.busybox, "Never", "true"))
	// cocoonRaw: without the helper's --generate-policy.
	out, errs, code := x.cocoonRaw("run", p)
	if code != 125 || !strings.Contains(errs, "has no cocoon.dev/policy annotation") {
		t.Errorf("exit %d stdout %q stderr %q", code, out, errs)
	}
	x.noSandbox("nopolicy")
}
