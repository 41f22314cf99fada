// Command mkimage writes a small OCI image into an OCI layout: busybox-static
// plus files from this machine. The examples use it because our machines
// have no internet; the pull path for real registries is the same.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cocoon.dev/cocoon/internal/testimage"
)

type adds []string

func (a *adds) String() string     { return strings.Join(*a, ",") }
func (a *adds) Set(s string) error { *a = append(*a, s); return nil }

func main() {
	var files adds
	out := flag.String("layout", "", "OCI layout directory to write")
	tag := flag.String("tag", "latest", "tag of the image in the layout")
	flag.Var(&files, "add", "DEST=SRC: add the file SRC at DEST (repeatable; executable)")
	gotree := flag.Bool("gotree", false, "add the 6 layers of this machine's Go toolchain tree (~170 MiB: a large image for benchmarks)")
	flag.Parse()
	if err := run(*out, *tag, files, *gotree); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(out, tag string, files []string, gotree bool) error {
	if out == "" {
		return fmt.Errorf("-layout is required")
	}
	var fs []testimage.File
	for _, a := range files {
		dst, src, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("-add %q: want DEST=SRC", a)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		fs = append(fs, testimage.File{Path: dst, Data: b, Mode: 0o755})
	}
	var layers []v1.Layer
	if len(fs) > 0 {
		l, err := testimage.Layer(fs)
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	if gotree {
		gl, _, err := testimage.GoTreeLayers()
		if err != nil {
			return err
		}
		layers = append(layers, gl...)
	}
	img, err := testimage.Busybox(layers...)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := testimage.WriteLayout(out, map[string]v1.Image{tag: img}); err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Printf("wrote %s:%s (%s)\n", out, tag, d)
	return nil
}
