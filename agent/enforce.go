package agent

import (
	"cocoon.dev/cocoon/imagesig"
	"context"
	"errors"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/spans"
	"cocoon.dev/cocoon/policy"
)

// Enforcer decides whether the agent serves a host request. It is the single
// place where a request can be refused: the ttrpc interceptor calls it for
// every method, after the request is decoded and before the method runs.
// method is the short API method name (e.g. "CreateContainer").
type Enforcer interface {
	Check(ctx context.Context, method string, req any) error
}

// ErrDenied marks a request refused by the Enforcer.
var ErrDenied = policy.ErrDenied

// DenyError is a refusal with the enforcement point that made it.
type DenyError = policy.DenyError

// Observer is an Enforcer that wants to know the outcome of the requests it
// allowed (the policy engine keeps container state that way).
type Observer interface {
	Observe(method string, req any, err error)
}

// interceptor runs the Enforcer on every decoded request.
func interceptor(e Enforcer) ttrpc.UnaryServerInterceptor {
	return func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
		short := shortMethod(info.FullMethod)
		checked := false
		var captured any
		var rec *spans.Recorder
		if traced(short) {
			ctx, rec = spans.With(ctx, nil)
		}
		resp, err := method(ctx, func(v any) error {
			if err := unmarshal(v); err != nil {
				return err
			}
			checked = true
			if err := e.Check(ctx, short, v); err != nil {
				return err
			}
			captured = v
			return nil
		})
		if !checked && err == nil {
			return nil, status.Errorf(codes.Internal, "%s: request was not checked by the enforcement hook", short)
		}
		if o, ok := e.(Observer); ok && checked && captured != nil {
			o.Observe(short, captured, err)
		}
		if err == nil && rec != nil {
			attachSpans(resp, rec.Spans())
		}
		return resp, toStatus(err)
	}
}

// traced says whether a request's response carries the agent's steps
// (cocoon run --trace); the others record none.
func traced(method string) bool {
	switch method {
	case "CreateSandbox", "PullImage", "CreateContainer", "StartContainer":
		return true
	}
	return false
}

// attachSpans answers the steps the agent took with the responses the
// host's trace lays out.
func attachSpans(resp any, list []spans.Span) {
	if len(list) == 0 {
		return
	}
	out := make([]*agentv1.Span, len(list))
	for i, s := range list {
		out[i] = &agentv1.Span{Name: s.Name, DurationUs: s.Duration.Microseconds()}
	}
	switch r := resp.(type) {
	case *agentv1.CreateSandboxResponse:
		r.Spans = out
	case *agentv1.PullImageResponse:
		r.Spans = out
	case *agentv1.CreateContainerResponse:
		r.Spans = out
	case *agentv1.StartContainerResponse:
		r.Spans = out
	}
}

func shortMethod(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}

// toStatus maps agent errors to ttrpc status codes, keeping the message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errors.Is(err, ErrDenied), errors.Is(err, imagesig.ErrNotSigned):
		code = codes.PermissionDenied
	case errors.Is(err, errNotFound):
		code = codes.NotFound
	case errors.Is(err, errExists):
		code = codes.AlreadyExists
	case errors.Is(err, errState):
		code = codes.FailedPrecondition
	case errors.Is(err, errInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		code = codes.Unknown
	}
	return status.Error(code, err.Error())
}

// Error classes of the agent API.
var (
	errNotFound = errors.New("not found")
	errExists   = errors.New("already exists")
	errState    = errors.New("wrong state")
	errInvalid  = errors.New("invalid request")
)
