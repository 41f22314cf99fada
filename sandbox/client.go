package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// Client is a connection to a sandbox's agent.
type Client struct {
	agentv1.AgentService
	c *ttrpc.Client
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// DialSocket connects to the agent API at a unix socket.
func DialSocket(ctx context.Context, sock string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, fmt.Errorf("connect to agent at %s: %w", sock, err)
	}
	tc := ttrpc.NewClient(conn)
	return &Client{AgentService: agentv1.NewAgentClient(tc), c: tc}, nil
}

// Dial connects to the agent of the named sandbox.
func (r Root) Dial(ctx context.Context, name string) (*Client, error) {
	st, err := r.Load(name)
	if err != nil {
		return nil, err
	}
	if st.Phase == PhaseAgentDied || st.Phase == PhaseUnknown {
		return nil, fmt.Errorf("sandbox %q: %s: %s", name, st.Phase, st.Message)
	}
	return DialSocket(ctx, r.AgentSocket(name))
}

// Message returns the agent's own message from an API error, without the
// RPC framing.
func Message(err error) string {
	if err == nil {
		return ""
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Message()
	}
	return err.Error()
}
