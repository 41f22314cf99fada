package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"cocoon.dev/cocoon/internal/testcosign"
	"cocoon.dev/cocoon/internal/testimage"
)

// pushSigned pushes img as repo:tag, signs it with key unless key is "",
// and returns repo@digest.
func pushSigned(t *testing.T, c *testcosign.Cosign, repoTag string, img v1.Image, key string, legacy bool) string {
	t.Helper()
	_, pinned, err := env.reg.Push(repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		c.Sign(t, key, pinned, legacy)
	}
	return pinned
}

// markerImage is busybox with a file saying which build it is, and the
// given command.
func markerImage(t *testing.T, build string, cmd []string) v1.Image {
	t.Helper()
	l, err := testimage.Layer([]testimage.File{{Path: "/build", Data: []byte(build + "\n"), Mode: 0o644}})
	if err != nil {
		t.Fatal(err)
	}
	bl, err := testimage.BusyboxLayer()
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimage.Image(v1.Config{Cmd: cmd, Env: []string{"PATH=/bin"}}, bl, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestSignedImage: a policy generated with --signed-by trusts the cosign
// key, not a digest. A rebuild signed by the key runs under the same
// policy; an image signed by another key, an unsigned one, one whose
// signature is for another digest and a signed rebuild whose command
// changed are refused at pull, before a layer is fetched, nothing started.
func TestSignedImage(t *testing.T) {
	x := newH(t)
	c := testcosign.New(t)
	key, pub := c.KeyPair(t, "publisher")
	other, _ := c.KeyPair(t, "other")
	repo := "signed/app"
	tag := env.reg.Host() + "/" + repo + ":1"
	cmd := []string{"cat", "/build"}
	first := pushSigned(t, c, repo+":1", markerImage(t, "build-1", cmd), key, false)
	yaml := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: signed}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: %s
`, tag)
	p := x.pod(yaml)
	x.mustRun(0, "policy", "generate", "--signed-by", pub, p)
	pol, _ := x.mustRun(0, "policy", "generate", "--print", "--signed-by", pub, p)
	if !strings.Contains(pol, `"signed_by"`) || strings.Contains(pol, `"digest": "sha256`) {
		t.Fatalf("the policy pins a digest or no signer:\n%s", pol)
	}
	policyFile, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	run := func(want int) (string, string) {
		t.Helper()
		os.WriteFile(p, policyFile, 0o644)
		out, errs := x.mustRun(want, "run", p)
		x.mustRun(0, "rm", "signed")
		return out, errs
	}
	if out, errs := run(0); !strings.Contains(out, "build-1") {
		t.Fatalf("first build: stdout %q stderr %q", out, errs)
	}
	// What the refusals below look for is there for a pulled image.
	if layerInStore(t, x.root, first) == "" {
		t.Fatal("the first build's layer is not found in the layer store: the check below could not fail")
	}
	// A rebuild, signed by the publisher: the same policy runs it.
	pushSigned(t, c, repo+":1", markerImage(t, "build-2", cmd), key, true)
	if out, errs := run(0); !strings.Contains(out, "build-2") {
		t.Fatalf("signed rebuild (cosign v2 format): stdout %q stderr %q", out, errs)
	}
	for _, tc := range []struct {
		name string
		push func() string // returns the digest now under the tag
		want string
	}{
		{"signed by another key", func() string {
			return pushSigned(t, c, repo+":1", markerImage(t, "build-other", cmd), other, false)
		}, "failed to verify signature"},
		{"unsigned", func() string {
			return pushSigned(t, c, repo+":1", markerImage(t, "build-unsigned", cmd), "", false)
		}, "no signature of"},
		{"a signature of another image moved onto it", func() string {
			signed := pushSigned(t, c, repo+":signed", markerImage(t, "build-3", cmd), key, true)
			d := pushSigned(t, c, repo+":1", markerImage(t, "build-moved", cmd), "", false)
			moveLegacySignature(t, signed, d)
			return d
		}, "the signature is for"},
		{"a signed rebuild that runs something else", func() string {
			return pushSigned(t, c, repo+":1", markerImage(t, "build-cmd", []string{"sh", "-c", "echo pwned"}), key, false)
		}, `its cmd is ["sh" "-c" "echo pwned"], the policy's copy ["cat" "/build"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.push()
			out, errs := run(125)
			if strings.Contains(out, "build-") || strings.Contains(out, "pwned") || !strings.Contains(errs, tc.want) {
				t.Fatalf("stdout %q stderr %q; want a refusal saying %q", out, errs, tc.want)
			}
			// Nothing of the image was fetched: no layer of it in the
			// agent's store under this test's state.
			if p := layerInStore(t, x.root, d); p != "" {
				t.Fatalf("the refused image's layer is in the layer store: %s", p)
			}
		})
	}
}

// moveLegacySignature copies the cosign v2 signature of from (repo@digest)
// to the tag of to's digest, as a registry could.
func moveLegacySignature(t *testing.T, from, to string) {
	t.Helper()
	fd, err := name.NewDigest(from)
	if err != nil {
		t.Fatal(err)
	}
	src, err := remote.Get(fd.Context().Tag("sha256-" + strings.TrimPrefix(fd.DigestStr(), "sha256:") + ".sig"))
	if err != nil {
		t.Fatal(err)
	}
	td, err := name.NewDigest(to)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(td.Context().Tag("sha256-"+strings.TrimPrefix(td.DigestStr(), "sha256:")+".sig"), src); err != nil {
		t.Fatal(err)
	}
}

// layerInStore returns where a layer unique to the image ref (its last
// layer: the marker) is in a layer store under root, or "".
func layerInStore(t *testing.T, root, ref string) string {
	t.Helper()
	d, err := name.NewDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("layers of %s: %v", ref, err)
	}
	diff, err := ls[len(ls)-1].DiffID()
	if err != nil {
		t.Fatal(err)
	}
	found := ""
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err == nil && e.Name() == diff.Hex {
			found = p
		}
		return nil
	})
	return found
}
