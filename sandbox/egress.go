package sandbox

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// egressProxy serves the sandbox's egress channel on a unix socket: each
// connection is an HTTP CONNECT to host:port, dialled from the host's network
// (so registries on the host's loopback work) and then spliced. It sees only
// what the agent sends, which is TLS or digest-verified content.
type egressProxy struct {
	l   net.Listener
	log *slog.Logger
	wg  sync.WaitGroup
}

func serveEgress(ctx context.Context, l net.Listener, log *slog.Logger) *egressProxy {
	p := &egressProxy{l: l, log: log}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(ctx, c)
			}()
		}
	}()
	return p
}

func (p *egressProxy) close() { p.l.Close() }

func (p *egressProxy) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(ctx, "tcp", req.Host)
	if err != nil {
		p.log.Info("egress connect failed", "target", req.Host, "error", err)
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	relay(up, br, c, up)
}

// relay copies src1 to dst1 and src2 to dst2 at once, half-closing each
// destination when its source ends, until both are done.
func relay(dst1 net.Conn, src1 io.Reader, dst2 net.Conn, src2 io.Reader) {
	done := make(chan struct{}, 2)
	cp := func(dst net.Conn, src io.Reader) {
		_, _ = io.Copy(dst, src)
		closeWrite(dst)
		done <- struct{}{}
	}
	go cp(dst1, src1)
	go cp(dst2, src2)
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
