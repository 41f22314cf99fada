// Package vmchan is the channel between a sandbox VM's agent and its host
// runtime when they share only a byte stream (a virtio-serial port): a yamux
// session whose host-opened streams carry the agent API (ttrpc) and whose
// guest-opened streams start with one tag byte naming the host service they
// want: the egress channel, the simulated secure processor, a local image
// source, or the agent's readiness report.
//
// Everything the host sends is untrusted by the guest: the channel only
// moves bytes whose meaning the agent checks (TLS, digests, signatures).
package vmchan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Tags of guest-opened streams.
const (
	TagReady  byte = 'R' // one line: "ready" or "error: ..."
	TagEgress byte = 'E' // HTTP CONNECT proxy, as the process backend's egress socket
	TagSim    byte = 'S' // the simulated secure processor's HTTP API
	TagFile   byte = 'F' // one line: an absolute path; the host answers with a tar of it
)

func config(log *slog.Logger, keepalive bool) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = keepalive
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = nil
	c.Logger = slogAdapter{log}
	return c
}

type slogAdapter struct{ l *slog.Logger }

func (s slogAdapter) Print(v ...any) { s.l.Debug(strings.TrimSpace(fmt.Sprint(v...))) }
func (s slogAdapter) Printf(format string, v ...any) {
	s.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)))
}
func (s slogAdapter) Println(v ...any) { s.l.Debug(strings.TrimSpace(fmt.Sprint(v...))) }

// Guest is the agent's end.
type Guest struct{ s *yamux.Session }

// NewGuest starts the guest end over rwc (the virtio-serial port). The guest
// sends nothing until the host has spoken, so bytes never go to a port
// nobody reads.
func NewGuest(rwc io.ReadWriteCloser, log *slog.Logger) (*Guest, error) {
	s, err := yamux.Server(rwc, config(log, false))
	if err != nil {
		return nil, fmt.Errorf("vm channel: %w", err)
	}
	return &Guest{s: s}, nil
}

// Listener accepts the host's streams (agent API connections).
func (g *Guest) Listener() net.Listener { return g.s }

// Dial opens a stream to the host service tag.
func (g *Guest) Dial(ctx context.Context, tag byte) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := g.s.Open()
		if err == nil {
			if _, err = c.Write([]byte{tag}); err != nil {
				c.Close()
			}
		}
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("vm channel: open %q stream: %w", tag, r.err)
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// Ready reports the agent's readiness (msg "ready") or why it failed.
func (g *Guest) Ready(ctx context.Context, msg string) error {
	c, err := g.Dial(ctx, TagReady)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.WriteString(c, msg+"\n")
	return err
}

// Close ends the session.
func (g *Guest) Close() error { return g.s.Close() }

// Host is the runtime's end.
type Host struct {
	s        *yamux.Session
	services map[byte]chan net.Conn
	ready    chan string
}

// NewHost starts the host end over conn (QEMU's chardev socket).
func NewHost(conn net.Conn, log *slog.Logger) (*Host, error) {
	s, err := yamux.Client(conn, config(log, true))
	if err != nil {
		return nil, fmt.Errorf("vm channel: %w", err)
	}
	h := &Host{s: s, ready: make(chan string, 1), services: map[byte]chan net.Conn{}}
	for _, t := range []byte{TagEgress, TagSim, TagFile} {
		h.services[t] = make(chan net.Conn)
	}
	go h.accept(log)
	return h, nil
}

func (h *Host) accept(log *slog.Logger) {
	for {
		st, err := h.s.AcceptStream()
		if err != nil {
			for _, ch := range h.services {
				close(ch)
			}
			return
		}
		go h.dispatch(stream{st}, log)
	}
}

func (h *Host) dispatch(c net.Conn, log *slog.Logger) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var tag [1]byte
	if _, err := io.ReadFull(c, tag[:]); err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if tag[0] == TagReady {
		line, _ := bufio.NewReader(io.LimitReader(c, 4096)).ReadString('\n')
		c.Close()
		select {
		case h.ready <- strings.TrimSpace(line):
		default:
		}
		return
	}
	ch, ok := h.services[tag[0]]
	if !ok {
		log.Warn("vm channel: stream for an unknown service", "tag", tag[0])
		c.Close()
		return
	}
	select {
	case ch <- c:
	case <-h.s.CloseChan():
		c.Close()
	}
}

// Service is a listener for the guest's streams to the service tag.
func (h *Host) Service(tag byte) net.Listener {
	return &serviceListener{ch: h.services[tag], addr: h.s.Addr(), done: h.s.CloseChan()}
}

// WaitReady waits for the agent's readiness report.
func (h *Host) WaitReady(ctx context.Context) (string, error) {
	select {
	case m := <-h.ready:
		return m, nil
	case <-h.s.CloseChan():
		return "", errors.New("vm channel closed before the agent was ready")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Open opens a stream to the agent API.
func (h *Host) Open() (net.Conn, error) {
	st, err := h.s.OpenStream()
	if err != nil {
		return nil, err
	}
	return stream{st}, nil
}

// stream is a yamux stream whose half-close has the name net.TCPConn and
// net.UnixConn give it, so relays can end one direction and not the other
// (yamux's Close sends FIN and keeps reading).
type stream struct{ *yamux.Stream }

// CloseWrite ends the stream's sending side.
func (s stream) CloseWrite() error { return s.Stream.Close() }

// Done is closed when the session ends.
func (h *Host) Done() <-chan struct{} { return h.s.CloseChan() }

// Close ends the session.
func (h *Host) Close() error { return h.s.Close() }

type serviceListener struct {
	ch   chan net.Conn
	addr net.Addr
	done <-chan struct{}
}

func (l *serviceListener) Accept() (net.Conn, error) {
	c, ok := <-l.ch
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}

func (l *serviceListener) Close() error   { return nil }
func (l *serviceListener) Addr() net.Addr { return l.addr }
