package e2e

import (
	"archive/tar"
	"fmt"
	"os/exec"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
)

// critestRegistries are the registries the CRI validation suite pulls
// from; containerd (and the cocoon runtime, through the same registry
// configuration) fetch them from the loopback registry instead.
var critestRegistries = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io"}

// pushCritestImages pushes look-alikes of the images critest v1.37 uses
// (same repositories and tags; busybox with every applet, a web server on
// port 80, a setuid program printing its effective uid, images with the
// users the suite expects) into the loopback registry.
func pushCritestImages() error {
	out, err := exec.Command(testimage.BusyboxPath, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	base, err := testimage.BusyboxLayer()
	if err != nil {
		return err
	}
	var links []testimage.File
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			links = append(links, testimage.File{Path: "/bin/" + a, Type: tar.TypeSymlink, Linkname: "busybox"})
		}
	}
	applets, err := testimage.Layer(links)
	if err != nil {
		return err
	}
	users, err := testimage.Layer([]testimage.File{
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\ndefault-user:x:1000:1000::/home:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		{Path: "/etc/group", Data: []byte("root:x:0:\nwww-data:x:33:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\nnogroup:x:65534:\n")},
	})
	if err != nil {
		return err
	}
	echoBin, err := testimage.GoBinary("cocoon.dev/cocoon/examples/hello/echo")
	if err != nil {
		return err
	}
	euidBin, err := testimage.GoBinary("cocoon.dev/cocoon/internal/testimage/euid")
	if err != nil {
		return err
	}
	web, err := testimage.Layer([]testimage.File{{Path: "/echo", Data: echoBin, Mode: 0o755}})
	if err != nil {
		return err
	}
	nnp, err := testimage.Layer([]testimage.File{{Path: "/usr/local/bin", Type: tar.TypeDir}, {Path: "/usr/local/bin/nnp", Data: euidBin, Mode: 0o4755}})
	if err != nil {
		return err
	}
	sh := func(cmd string) v1.Config {
		return v1.Config{Env: []string{"PATH=/usr/local/bin:/bin"}, Cmd: []string{"/bin/sh", "-c", cmd}}
	}
	type img struct {
		cfg    v1.Config
		layers []v1.Layer
	}
	bb := img{v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}, []v1.Layer{base, applets, users}}
	withUser := func(u string) img {
		c := bb.cfg
		c.User = u
		return img{c, bb.layers}
	}
	// Distinct images for the tests that need different image IDs.
	distinct := func(i int) img {
		c := bb.cfg
		c.Labels = map[string]string{"look-alike": fmt.Sprint(i)}
		return img{c, bb.layers}
	}
	const staging = "k8s-staging-cri-tools/"
	images := map[string]img{
		"e2e-test-images/busybox:1.29-2":                  bb,
		"e2e-test-images/nginx:1.14-2":                    {v1.Config{Env: []string{"PATH=/bin"}, Entrypoint: []string{"/echo", "-listen", "0.0.0.0:80"}}, []v1.Layer{base, applets, users, web}},
		"e2e-test-images/httpd:2.4.39-4":                  {sh("echo httpd starting; exec /echo -listen 0.0.0.0:80"), []v1.Layer{base, applets, users, web}},
		"e2e-test-images/nonewprivs:1.3":                  {v1.Config{Env: []string{"PATH=/usr/local/bin:/bin"}, Entrypoint: []string{"/usr/local/bin/nnp"}}, []v1.Layer{base, applets, users, nnp}},
		"pause:3.9":                                       {v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}}, []v1.Layer{base}},
		staging + "test-image-user-uid:latest":            withUser("1002"),
		staging + "test-image-user-username:latest":       withUser("www-data"),
		staging + "test-image-user-uid-group:latest":      withUser("1003:users"),
		staging + "test-image-user-username-group:latest": withUser("www-data:www-data"),
		staging + "test-image-predefined-group:latest":    withUser("1000"),
		staging + "test-image-latest:latest":              distinct(10),
		staging + "test-image-tag:test":                   distinct(11),
		staging + "test-image-tag:all":                    distinct(12),
		staging + "test-image-1:latest":                   distinct(1),
		staging + "test-image-2:latest":                   distinct(2),
		staging + "test-image-3:latest":                   distinct(3),
		staging + "test-image-tags:1":                     distinct(20),
		staging + "test-image-tags:2":                     distinct(20),
		staging + "test-image-tags:3":                     distinct(20),
	}
	for ref, im := range images {
		i, err := testimage.Image(im.cfg, im.layers...)
		if err != nil {
			return err
		}
		if _, _, err := env.reg.Push(ref, i); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
	}
	return nil
}
