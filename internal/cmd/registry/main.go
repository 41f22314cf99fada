// Command registry serves images over the OCI distribution protocol on
// loopback, for benchmarks: an in-memory registry (go-containerregistry's)
// into which it pushes each image of an OCI layout, printing the pushed
// references, then serves until killed.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	dir := flag.String("layout", "", "OCI layout whose tagged images to serve")
	repo := flag.String("repo", "bench/image", "repository to push them to (tag: the layout's tag)")
	flag.Parse()
	if err := run(*dir, *repo); err != nil {
		fmt.Fprintln(os.Stderr, "registry:", err)
		os.Exit(1)
	}
	select {} // serve until killed
}

func run(dir, repo string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	lp, err := layout.FromPath(dir)
	if err != nil {
		return err
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		tag := d.Annotations[ocispec.AnnotationRefName]
		if tag == "" {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		ref, err := name.ParseReference(l.Addr().String() + "/" + repo + ":" + tag)
		if err != nil {
			return err
		}
		if err := remote.Write(ref, img); err != nil {
			return err
		}
		fmt.Println(ref.String())
	}
	return nil
}
