package agent

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/spans"
	"cocoon.dev/cocoon/sealed"
)

// unsealEnv replaces each sealed environment value of a container (a
// "sealed." reference to a key broker resource, as the pod's policy pinned
// it) with the resource, fetched through the sandbox's own attested KBS
// session: the secret exists only inside the TEE. A spec without sealed
// values is returned as it is; with them, a copy. Nothing is created when
// one cannot be unsealed, and no error repeats a value.
func (a *Agent) unsealEnv(ctx context.Context, spec *agentv1.ContainerSpec) (*agentv1.ContainerSpec, error) {
	var out *agentv1.ContainerSpec
	for i, e := range spec.GetEnv() {
		if !sealed.Is(e.GetValue()) {
			continue
		}
		s, err := sealed.Parse(e.GetValue())
		if err != nil {
			return nil, fmt.Errorf("container %q: env %s: %w: %w", spec.GetName(), e.GetName(), err, errInvalid)
		}
		if out == nil {
			out = proto.Clone(spec).(*agentv1.ContainerSpec)
			defer spans.Start(ctx, "sealed secrets unsealed (released by the key broker)")()
		}
		repo, typ, tag := s.Resource()
		v, err := a.resource(ctx, repo, typ, tag)
		if err != nil {
			return nil, fmt.Errorf("container %q: env %s: the sealed secret %s was not released: %w: %w", spec.GetName(), e.GetName(), s.Name, err, errState)
		}
		if strings.IndexByte(string(v), 0) >= 0 {
			clear(v)
			return nil, fmt.Errorf("container %q: env %s: the secret %s holds a NUL byte, which an environment value cannot: %w", spec.GetName(), e.GetName(), s.Name, errInvalid)
		}
		out.Env[i].Value = string(v)
		clear(v)
	}
	if out == nil {
		return spec, nil
	}
	return out, nil
}
