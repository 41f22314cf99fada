// Command echo is the hello example's server: a tiny static HTTP server that
// answers every request with its path and the hostname. With -get it is a
// client instead: it fetches a URL (optionally over a unix socket, such as
// the in-pod API's /run/cocoon/api.sock) and prints the body.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	get := flag.String("get", "", "client mode: fetch this URL and print the body")
	unix := flag.String("unix", "", "client mode: connect to this unix socket instead of the URL's host")
	flag.Parse()
	if *get != "" {
		os.Exit(fetch(*get, *unix))
	}
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "echo from %s: %s\n", host, strings.TrimPrefix(r.URL.Path, "/"))
	})
	log.Printf("echo server listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

func fetch(url, sock string) int {
	c := http.DefaultClient
	if sock != "" {
		c = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, resp.Status)
		return 1
	}
	return 0
}
