package agentv1

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	protoreflect "google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Methods lists the Agent service's methods, as the protobuf descriptor
// declares them: the one list the enforcement hook, the policy engine and
// `cocoon policy explain` derive theirs from.
func Methods() []string {
	sd := File_agent_proto.Services().ByName("Agent")
	out := make([]string, sd.Methods().Len())
	for i := range out {
		out[i] = string(sd.Methods().Get(i).Name())
	}
	return out
}

// HasMethod reports whether the Agent service has method (no allocation:
// the enforcement hook asks on every request).
func HasMethod(method string) bool {
	return File_agent_proto.Services().ByName("Agent").Methods().ByName(protoreflect.Name(method)) != nil
}

// NewRequest returns an empty request message of method.
func NewRequest(method string) (proto.Message, error) {
	sd := File_agent_proto.Services().ByName("Agent")
	m := sd.Methods().ByName(protoreflect.Name(method))
	if m == nil {
		return nil, fmt.Errorf("the agent API has no method %q (it has %v)", method, Methods())
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
	if err != nil {
		return nil, err
	}
	return mt.New().Interface(), nil
}
