package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/spans"
	"cocoon.dev/cocoon/tee"
)

// ErrDenied marks a request the policy refused.
var ErrDenied = errors.New("denied")

// DenyError is a refusal: the method (enforcement point) and why.
type DenyError struct {
	Method string
	Reason string
}

func (e *DenyError) Error() string { return fmt.Sprintf("%s denied: %s", e.Method, e.Reason) }

// Unwrap makes errors.Is(err, ErrDenied) true.
func (e *DenyError) Unwrap() error { return ErrDenied }

// Binder checks that a policy's hash is what the hardware report of this
// sandbox carries (HOST_DATA / MRCONFIGID).
type Binder func(ctx context.Context, text []byte) error

// Engine is the agent's enforcement hook: until a policy bound to the
// hardware is loaded it denies everything; then it evaluates every request
// with the policy and keeps the container state the rules need.
type Engine struct {
	bind   Binder
	pulled func() map[string]PulledImage

	mu       sync.Mutex
	ev       *Evaluator
	hostname string
	st       State
}

// NewEngine returns an engine with no policy loaded. bind checks a policy
// against the hardware; pulled reports the images the agent pulled.
func NewEngine(bind Binder, pulled func() map[string]PulledImage) *Engine {
	return &Engine{bind: bind, pulled: pulled, st: State{Created: map[string]bool{}, Running: map[string]bool{}}}
}

// Loaded returns the loaded policy's evaluator, or nil.
func (e *Engine) Loaded() *Evaluator {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ev
}

func deny(method, format string, args ...any) error {
	return &DenyError{Method: method, Reason: fmt.Sprintf(format, args...)}
}

// Check implements the agent's Enforcer.
func (e *Engine) Check(ctx context.Context, method string, req any) error {
	if method == "CreateSandbox" {
		return e.load(ctx, req)
	}
	e.mu.Lock()
	ev, host := e.ev, e.hostname
	st := State{Created: cloneSet(e.st.Created), Running: cloneSet(e.st.Running)}
	e.mu.Unlock()
	if ev == nil {
		return deny(method, "no policy is loaded: every request is refused until the sandbox is created with a policy whose hash the hardware report carries")
	}
	var pulled map[string]PulledImage
	if method == "CreateContainer" && e.pulled != nil {
		pulled = e.pulled()
	}
	end := spans.Start(ctx, "policy decision")
	in, err := Input(ev.Policy, method, req, &st, pulled, host)
	if err != nil {
		return deny(method, "%v", err)
	}
	ok, reasons, err := ev.Decide(ctx, method, in)
	end()
	if err != nil {
		return deny(method, "%v", err)
	}
	if !ok {
		return deny(method, "%s", strings.Join(reasons, "; "))
	}
	return nil
}

// load binds and loads the policy of CreateSandbox, once.
func (e *Engine) load(ctx context.Context, req any) error {
	const m = "CreateSandbox"
	r, ok := req.(*agentv1.CreateSandboxRequest)
	if !ok {
		return deny(m, "malformed request")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ev != nil {
		return deny(m, "a policy is already loaded (sha256 %s); a policy can be set once", HashHex(e.ev.Text, tee.Sim))
	}
	if len(r.GetPolicy()) == 0 {
		return deny(m, "the request carries no policy; generate one with `cocoon policy generate` (or run with --generate-policy)")
	}
	end := spans.Start(ctx, "policy parsed and loaded")
	ev, err := NewEvaluator(ctx, r.GetPolicy())
	end()
	if err != nil {
		return deny(m, "the policy is not valid: %v", err)
	}
	if e.bind == nil {
		return deny(m, "this sandbox cannot bind a policy to a hardware report")
	}
	end = spans.Start(ctx, "policy bound to the hardware report (evidence)")
	err = e.bind(ctx, r.GetPolicy())
	end()
	if err != nil {
		return deny(m, "%v", err)
	}
	end = spans.Start(ctx, "policy decision")
	in, err := Input(ev.Policy, m, r, &e.st, nil, "")
	if err != nil {
		return deny(m, "%v", err)
	}
	allowed, reasons, err := ev.Decide(ctx, m, in)
	end()
	if err != nil {
		return deny(m, "%v", err)
	}
	if !allowed {
		return deny(m, "%s", strings.Join(reasons, "; "))
	}
	e.ev, e.hostname = ev, in["hostname"].(string)
	return nil
}

// Observe records the outcome of an allowed request (the state rules need).
func (e *Engine) Observe(method string, req any, err error) {
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch r := req.(type) {
	case *agentv1.CreateContainerRequest:
		e.st.Created[r.GetSpec().GetName()] = true
	case *agentv1.StartContainerRequest:
		e.st.Running[r.GetContainer()] = true
	case *agentv1.RemoveContainerRequest:
		if r.GetExecId() != "" {
			break // an exec was forgotten; the container stays
		}
		delete(e.st.Created, r.GetContainer())
		delete(e.st.Running, r.GetContainer())
	}
}

func cloneSet(m map[string]bool) map[string]bool {
	c := make(map[string]bool, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
