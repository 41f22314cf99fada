package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"cocoon.dev/cocoon/internal/testcri"
	"cocoon.dev/cocoon/internal/testkube"
)

// TestKubelet: a real kubelet (v1.34, with kube-apiserver and etcd; no
// scheduler, no controllers) runs a pod with runtimeClassName: cocoon
// through a containerd of its own: the RuntimeClass selects the handler,
// the policy travels in the pod's annotation, the pod runs and its log is
// read through the API server; a pod whose command is not its policy's
// never starts, and the explanation is in the pod's status (what kubectl
// describe pod shows).
func TestKubelet(t *testing.T) {
	if env.skipWhy != "" {
		t.Skip(env.skipWhy)
	}
	tools := testcri.Tools()
	for _, m := range []string{testcri.Missing(tools), testkube.Missing(tools)} {
		if m == "" {
			continue
		}
		if os.Getenv("CI") != "" {
			t.Fatalf("the kubelet test needs %s", m)
		}
		t.Skipf("the kubelet test needs %s", m)
	}
	o, err := criOptions(tools)
	if err != nil {
		t.Fatal(err)
	}
	ctrd, err := testcri.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	defer ctrd.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	node, err := testkube.Start(ctx, tools, ctrd.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop()

	if _, err := node.Do(ctx, "POST", "/apis/node.k8s.io/v1/runtimeclasses", map[string]any{
		"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": map[string]any{"name": "cocoon"}, "handler": "cocoon",
	}); err != nil {
		t.Fatal(err)
	}
	cmd := "echo hello from kubelet; exec sleep 1000"
	podYAML := hostPodYAML("kube-web", env.pinned, cmd)
	ann := policyAnnotation(t, podYAML)
	pod := func(name, command string) map[string]any {
		return map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": name, "annotations": map[string]string{"cocoon.dev/policy": ann}},
			"spec": map[string]any{
				"runtimeClassName": "cocoon", "nodeName": node.Name, "enableServiceLinks": false,
				"automountServiceAccountToken": false, "hostname": "kube-web", "terminationGracePeriodSeconds": 1,
				"containers": []any{map[string]any{"name": "main", "image": env.pinned, "command": []string{"/bin/sh", "-c", command}}},
			},
		}
	}
	for _, p := range []map[string]any{pod("kube-web", cmd), pod("kube-evil", "echo pwned; "+cmd)} {
		if _, err := node.Do(ctx, "POST", "/api/v1/namespaces/default/pods", p); err != nil {
			t.Fatal(err)
		}
	}
	type status struct {
		Status struct {
			Phase             string
			ContainerStatuses []struct {
				State struct {
					Running *struct{} `json:"running"`
					Waiting *struct{ Reason, Message string }
				}
			}
		}
	}
	waitPod := func(name string, ok func(s status) bool) status {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			var s status
			if err := node.GetJSON(ctx, "/api/v1/namespaces/default/pods/"+name, &s); err == nil && ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				b, _ := node.Get(ctx, "/api/v1/namespaces/default/pods/"+name)
				t.Fatalf("pod %s: %s\n%s\ncontainerd:\n%s", name, b, node.LogTails(20), ctrd.LogTail(20))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	waitPod("kube-web", func(s status) bool { return s.Status.Phase == "Running" })
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := node.Get(ctx, "/api/v1/namespaces/default/pods/kube-web/log")
		if err == nil && strings.Contains(string(b), "hello from kubelet") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kubectl logs: %q %v", b, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The pod runs in a cocoon sandbox: the agent serves its containers.
	if out, _, _ := ctrd.Crictl("pods", "--runtime", "cocoon", "-q"); len(strings.Fields(out)) == 0 {
		t.Fatal("no pod runs with the cocoon handler")
	}

	s := waitPod("kube-evil", func(s status) bool {
		cs := s.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].State.Waiting != nil && strings.Contains(cs[0].State.Waiting.Message, "policy allows")
	})
	msg := s.Status.ContainerStatuses[0].State.Waiting.Message
	if !strings.Contains(msg, "CreateContainer denied") || s.Status.ContainerStatuses[0].State.Running != nil {
		t.Errorf("the refused pod's container: running %v, message %q", s.Status.ContainerStatuses[0].State.Running != nil, msg)
	}
	if b, _ := node.Get(ctx, "/api/v1/namespaces/default/pods/kube-evil/log"); strings.Contains(string(b), "pwned") {
		t.Fatal("the refused container ran")
	}
	t.Logf("the refused pod's status says: %s", msg)
	for _, name := range []string{"kube-web", "kube-evil"} {
		if _, err := node.Do(ctx, "DELETE", fmt.Sprintf("/api/v1/namespaces/default/pods/%s?gracePeriodSeconds=0", name), nil); err != nil {
			t.Error(err)
		}
	}
}
