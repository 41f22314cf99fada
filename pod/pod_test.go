package pod

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKinds(t *testing.T) {
	body := `
  template:
    metadata: {labels: {app: x}}
    spec:
      restartPolicy: OnFailure
      containers:
      - name: app
        image: busybox
        command: ["sh", "-c", "echo $(GREETING)"]
        env:
        - {name: GREETING, value: hi}
`
	for _, kind := range []string{"apps/v1 Deployment", "apps/v1 StatefulSet", "apps/v1 DaemonSet", "batch/v1 Job"} {
		api, k, _ := strings.Cut(kind, " ")
		y := "apiVersion: " + api + "\nkind: " + k + "\nmetadata: {name: web}\nspec:" + body
		p, err := Parse([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if p.Name != "web" || len(p.Main) != 1 || p.Main[0].Spec.Command[2] != "echo hi" {
			t.Errorf("%s: got %+v %v", kind, p, p.Main[0].Spec.Command)
		}
	}
}

func TestParseErrors(t *testing.T) {
	ents, err := filepath.Glob("testdata/bad-*.yaml")
	if err != nil || len(ents) == 0 {
		t.Fatal("no testdata")
	}
	for _, f := range ents {
		t.Run(filepath.Base(f), func(t *testing.T) {
			y, _ := os.ReadFile(f)
			// The first line of each file is "# want: <substring>".
			first, _, _ := strings.Cut(string(y), "\n")
			want := strings.TrimSpace(strings.TrimPrefix(first, "# want:"))
			_, err := Parse(y)
			if err == nil {
				t.Fatalf("parsed, want error containing %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		})
	}
}

func TestUnsupportedFieldNamed(t *testing.T) {
	y := `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: a
    image: busybox
    env:
    - {name: A, value: "1"}
    - {name: B, value: "2"}
    - name: C
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
`
	_, err := Parse([]byte(y))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "spec.containers[0].env[2].valueFrom.fieldRef is not supported") {
		t.Fatalf("got %v", err)
	}
}

func TestTranslate(t *testing.T) {
	y := `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  restartPolicy: Never
  nodeSelector: {disk: ssd}
  securityContext: {runAsUser: 1000}
  volumes:
  - name: shared
    emptyDir: {sizeLimit: 10Mi}
  initContainers:
  - {name: init, image: busybox, command: ["true"]}
  - name: side
    image: busybox
    restartPolicy: Always
  containers:
  - name: main
    image: busybox
    args: ["$$(NOT)", "$(UNDEFINED)"]
    workingDir: /tmp
    volumeMounts: [{name: shared, mountPath: /data, readOnly: true}]
    resources: {limits: {memory: 64Mi, cpu: 500m}}
    securityContext:
      runAsUser: 0
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
`
	p, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "spec.nodeSelector") {
		t.Errorf("warnings %v", p.Warnings)
	}
	if p.Init[0].Kind != KindInit || p.Init[1].Kind != KindSidecar || p.Main[0].Kind != KindMain {
		t.Errorf("kinds %v %v %v", p.Init[0].Kind, p.Init[1].Kind, p.Main[0].Kind)
	}
	m := p.Main[0].Spec
	if m.Args[0] != "$(NOT)" || m.Args[1] != "$(UNDEFINED)" {
		t.Errorf("args %q", m.Args)
	}
	if !m.HasRunAsUser || m.RunAsUser != 0 || !m.ReadOnlyRootFilesystem || !m.NoNewPrivileges {
		t.Errorf("security %+v", m)
	}
	if p.Init[0].Spec.RunAsUser != 1000 {
		t.Errorf("pod-level runAsUser not applied")
	}
	if m.Resources.MemoryLimitBytes != 64<<20 || m.Resources.CpuLimitMillis != 500 {
		t.Errorf("resources %+v", m.Resources)
	}
	if p.Volumes[0].SizeLimitBytes != 10<<20 || !m.Mounts[0].ReadOnly {
		t.Errorf("volumes %+v %+v", p.Volumes, m.Mounts)
	}
	if got := p.Images(); len(got) != 1 {
		t.Errorf("images %v", got)
	}
}

func FuzzParse(f *testing.F) {
	ents, _ := filepath.Glob("testdata/*.yaml")
	for _, e := range ents {
		b, _ := os.ReadFile(e)
		f.Add(b)
	}
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: b}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		// A parsed pod is always runnable in shape.
		if p.Name == "" || len(p.Main) == 0 {
			t.Fatalf("parsed pod without name or containers: %+v", p)
		}
		for _, c := range append(append([]Container{}, p.Init...), p.Main...) {
			if c.Spec.GetName() == "" || c.Spec.GetImage() == "" {
				t.Fatalf("container without name or image: %+v", c.Spec)
			}
			for _, m := range c.Spec.GetMounts() {
				if !strings.HasPrefix(m.GetMountPath(), "/") || strings.Contains("/"+m.GetSubPath()+"/", "/../") {
					t.Fatalf("unsafe mount passed: %+v", m)
				}
			}
		}
	})
}
