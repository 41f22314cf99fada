package policy

import (
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// TestEveryRequestFieldIsPoliced walks every request message of the agent
// API by protobuf reflection, nested messages included, sets each field in
// turn and requires that the policy input changes (the field is policed) or
// that the request is refused (a field the agent would ignore). A field added
// to the API later fails here until the policy sees it.
func TestEveryRequestFieldIsPoliced(t *testing.T) {
	p := &Policy{Images: map[string]Image{}, Containers: map[string]*Container{}}
	st := &State{Created: map[string]bool{}, Running: map[string]bool{}}
	sd := agentv1.File_agent_proto.Services().ByName("Agent")
	if sd == nil || sd.Methods().Len() == 0 {
		t.Fatal("the agent service is not in the descriptor")
	}
	checked := 0
	for i := 0; i < sd.Methods().Len(); i++ {
		m := sd.Methods().Get(i)
		mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range fieldPaths(m.Input(), nil) {
			name := string(m.Name()) + "." + pathName(path)
			base, set := mt.New().Interface(), mt.New().Interface()
			populate(base.ProtoReflect(), path, false)
			populate(set.ProtoReflect(), path, true)
			in0, err := Input(p, string(m.Name()), base, st, nil, "host")
			if err != nil {
				t.Errorf("%s: the request without the field is refused: %v", name, err)
				continue
			}
			in1, err := Input(p, string(m.Name()), set, st, nil, "host")
			checked++
			if err != nil {
				continue // refused when set
			}
			if reflect.DeepEqual(in0, in1) {
				t.Errorf("%s: neither in the policy input nor refused when set", name)
			}
		}
	}
	if checked < 40 {
		t.Errorf("only %d fields checked: the walk is broken", checked)
	}
}

// fieldPaths lists every scalar leaf of md as a path of field descriptors.
func fieldPaths(md protoreflect.MessageDescriptor, prefix []protoreflect.FieldDescriptor) [][]protoreflect.FieldDescriptor {
	var out [][]protoreflect.FieldDescriptor
	fs := md.Fields()
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		p := append(append([]protoreflect.FieldDescriptor{}, prefix...), f)
		if f.Kind() == protoreflect.MessageKind && !f.IsMap() {
			out = append(out, fieldPaths(f.Message(), p)...)
			continue
		}
		out = append(out, p)
	}
	return out
}

func pathName(p []protoreflect.FieldDescriptor) string {
	var s []string
	for _, f := range p {
		s = append(s, string(f.Name()))
	}
	return strings.Join(s, ".")
}

// populate creates the messages along path (one element for a repeated
// one) and, when set, gives the leaf a non-zero value (one element for a
// repeated scalar).
func populate(m protoreflect.Message, path []protoreflect.FieldDescriptor, set bool) {
	f := path[0]
	if len(path) > 1 {
		if f.IsList() {
			l := m.Mutable(f).List()
			e := l.NewElement()
			populate(e.Message(), path[1:], set)
			l.Append(e)
			return
		}
		populate(m.Mutable(f).Message(), path[1:], set)
		return
	}
	if !set {
		return
	}
	if f.IsMap() {
		m.Mutable(f).Map().Set(protoreflect.ValueOfString("x-set").MapKey(), leafValue(f.MapValue()))
		return
	}
	v := leafValue(f)
	if f.IsList() {
		m.Mutable(f).List().Append(v)
		return
	}
	m.Set(f, v)
}

func leafValue(f protoreflect.FieldDescriptor) protoreflect.Value {
	switch f.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("x-set")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("x-set"))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(7)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(7)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(7)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(7)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(f.Enum().Values().Get(f.Enum().Values().Len() - 1).Number())
	}
	panic("unhandled field kind " + f.Kind().String())
}
