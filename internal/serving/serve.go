package serving

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"runtime/debug"
	"time"
)

// Serve serves h on l until ctx ends, then shuts down gracefully: it
// returns once the requests in flight are answered (at most 5 s), so that
// what they use (a store's connections) can be closed after it.
// With certFile and keyFile it serves TLS (1.2 or later). The server's
// collector is tuned for services: their requests allocate (JSON, JOSE,
// TLS) on a small live heap, so fewer collections (GOGC=1000) bounded by a
// 1 GiB soft limit leave the CPU to the crypto.
func Serve(ctx context.Context, l net.Listener, h http.Handler, certFile, keyFile string) error {
	debug.SetGCPercent(1000)
	debug.SetMemoryLimit(1 << 30)
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	var err error
	if certFile != "" {
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		err = hs.ServeTLS(l, certFile, keyFile)
	} else {
		err = hs.Serve(l)
	}
	if errors.Is(err, http.ErrServerClosed) {
		// Serve returns as Shutdown starts; the requests it waits for
		// are still running.
		<-drained
		return nil
	}
	return err
}
