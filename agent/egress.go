package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// EgressTransport returns an HTTP transport whose connections go through the
// host's egress channel at the unix socket sock: each dial asks the host to
// connect to host:port (an HTTP CONNECT) and then speaks through it. The
// channel is untrusted; TLS runs inside the sandbox on top of it, and images
// are verified by digest, so the host can refuse service but not forge
// content.
func EgressTransport(sock string) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return EgressTransportDial(func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			return nil, fmt.Errorf("egress channel %s: %w", sock, err)
		}
		return c, nil
	})
}

// EgressTransportDial is EgressTransport over connections from dial (a VM's
// channel to its host).
func EgressTransportDial(dial func(context.Context) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			if dl, ok := ctx.Deadline(); ok {
				_ = c.SetDeadline(dl)
			}
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("egress channel: connect %s: %w", addr, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				c.Close()
				return nil, fmt.Errorf("egress channel: connect %s: host answered %s", addr, resp.Status)
			}
			_ = c.SetDeadline(time.Time{})
			if br.Buffered() > 0 {
				c.Close()
				return nil, fmt.Errorf("egress channel: connect %s: unexpected data after the reply", addr)
			}
			return c, nil
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}
