// Command echo is the hello example's server: a tiny static HTTP server that
// answers every request with its path, the hostname and the time.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "echo from %s: %s\n", host, strings.TrimPrefix(r.URL.Path, "/"))
	})
	log.Printf("echo server listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
