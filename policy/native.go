package policy

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// The framework, version 1, evaluated natively: the same rules, decisions
// and reasons as framework.rego, which stays the specification (package
// policy/rego evaluates it with OPA, and a differential test holds the two
// to the same answers). Native evaluation keeps OPA — three quarters of the
// agent's binary, with its parser, compiler and builtins — out of the TCB.
//
// Rules see the policy data and the input as JSON values (objects, arrays,
// strings, float64, bool), as Rego does, so that comparisons, set equality
// and the JSON shown in reasons are Rego's.

type jsonObj = map[string]any

// native is a compiled policy: its data as JSON values, the env index and
// the compiled env patterns.
type native struct {
	p        jsonObj
	debug    bool
	allowAll bool
	envIndex map[string]map[string]bool
	patterns map[string][]*regexp.Regexp
}

func compileNative(p *Policy) (*native, error) {
	data, err := toJSON(p)
	if err != nil {
		return nil, err
	}
	n := &native{p: data.(jsonObj), debug: p.Debug, allowAll: p.AllowAll, envIndex: map[string]map[string]bool{}, patterns: map[string][]*regexp.Regexp{}}
	for name, c := range p.Containers {
		set := map[string]bool{}
		for _, e := range c.Env {
			set[e] = true
		}
		n.envIndex[name] = set
		for _, pat := range c.EnvPatterns {
			re, err := regexp.Compile(pat)
			if err != nil {
				return nil, fmt.Errorf("container %q: env pattern %q: %w", name, pat, err)
			}
			n.patterns[name] = append(n.patterns[name], re)
		}
	}
	return n, nil
}

// toJSON turns v into plain JSON values (a round trip through encoding/json).
func toJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// j is Rego's json.marshal of a JSON value: compact, object keys sorted,
// HTML characters escaped.
func j(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func obj(v any) jsonObj { m, _ := v.(jsonObj); return m }
func arr(v any) []any   { a, _ := v.([]any); return a }
func str(v any) string  { s, _ := v.(string); return s }
func truthy(v any) bool { b, _ := v.(bool); return b }

// setEq is Rego's {x | some x in a} == {x | some x in b}.
func setEq(a, b []any) bool {
	key := func(xs []any) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[j(x)] = true
		}
		return m
	}
	return reflect.DeepEqual(key(a), key(b))
}

// keys is json.marshal(object.keys(o)): the sorted keys.
func keys(o jsonObj) string {
	ks := make([]string, 0, len(o))
	for k := range o {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return j(ks)
}

// get is o[k] with Rego's undefined as ok=false.
func get(o jsonObj, k string) (any, bool) {
	if o == nil {
		return nil, false
	}
	v, ok := o[k]
	return v, ok
}

func (n *native) envShown(e string) string {
	if n.debug {
		return e
	}
	name, _, _ := strings.Cut(e, "=")
	return name + "=<redacted>"
}

type denials []string

func (d *denials) add(format string, args ...any) { *d = append(*d, fmt.Sprintf(format, args...)) }

// decide evaluates one rule on the input and returns the decision.
func (n *native) decide(rule string, in jsonObj) (bool, []string) {
	var d denials
	switch rule {
	case "create_sandbox":
		n.createSandbox(in, &d)
	case "pull_image":
		if _, ok := get(obj(n.p["images"]), str(in["image"])); !ok {
			d.add("pull_image: image %q is not in the policy (policy allows %s)", str(in["image"]), keys(obj(n.p["images"])))
		}
	case "create_container":
		n.createContainer(in, &d)
	case "start_container":
		if !truthy(obj(in["state"])["created"]) {
			d.add("start_container %q: the policy did not allow creating it", str(in["container"]))
		}
	case "exec_process":
		n.execProcess(in, &d)
	case "signal_container":
		name := str(in["container"])
		c, ok := get(obj(n.p["containers"]), name)
		if !ok {
			d.add("signal_container %q: no such container in the policy", name)
		} else if !slices.ContainsFunc(arr(obj(c)["signals"]), func(s any) bool { return reflect.DeepEqual(s, in["signal"]) }) {
			d.add("signal_container %q: signal = %d, policy allows %s", name, int64(num(in["signal"])), j(obj(c)["signals"]))
		}
	case "read_logs":
		name := str(in["container"])
		c, ok := get(obj(n.p["containers"]), name)
		if !ok {
			d.add("read_logs %q: no such container in the policy", name)
		} else if str(in["exec_id"]) == "" && !truthy(obj(c)["stdio"]) {
			d.add("read_logs %q: stdio = false: the policy does not let the host read this container's output", name)
		}
	case "write_stdin":
		name := str(in["container"])
		c, ok := get(obj(n.p["containers"]), name)
		if !ok {
			d.add("write_stdin %q: no such container in the policy", name)
		} else if str(in["exec_id"]) == "" && !truthy(obj(c)["stdin"]) {
			d.add("write_stdin %q: stdin = false: the policy gives this container no stdin", name)
		}
	case "resize_terminal":
		if _, ok := get(obj(n.p["containers"]), str(in["container"])); !ok {
			d.add("resize_terminal %q: no such container in the policy", str(in["container"]))
		}
	case "remove_container", "wait_container", "list_containers", "stats", "pull_progress", "shutdown", "get_evidence":
	default:
		return false, nil
	}
	if n.allowAll {
		return true, nil
	}
	sort.Strings(d)
	return len(d) == 0, d
}

func num(v any) float64 { f, _ := v.(float64); return f }

func (n *native) createSandbox(in jsonObj, d *denials) {
	sb := obj(n.p["sandbox"])
	if str(in["name"]) != str(sb["name"]) {
		d.add("create_sandbox: name = %q, policy allows %q", str(in["name"]), str(sb["name"]))
	}
	if str(sb["hostname"]) != "" && str(in["hostname"]) != str(sb["hostname"]) {
		d.add("create_sandbox: hostname = %q, policy allows %q", str(in["hostname"]), str(sb["hostname"]))
	}
	if !setEq(arr(in["volumes"]), arr(sb["volumes"])) {
		d.add("create_sandbox: volumes = %s, policy allows %s", j(in["volumes"]), j(sb["volumes"]))
	}
	pinned := obj(sb["sysctls"])
	for k, v := range obj(in["sysctls"]) {
		if pv, ok := pinned[k]; (ok && pv == v) || RuntimeSysctl(k, str(v)) {
			continue
		}
		d.add("create_sandbox: sysctl %s = %q is not allowed by the policy", k, str(v))
	}
	for k, v := range pinned {
		if iv, ok := obj(in["sysctls"])[k]; !ok || iv != v {
			d.add("create_sandbox: sysctl %s = %q required by the policy is missing", k, str(v))
		}
	}
	enc, ok := sb["encrypted_volumes"] // object.get(p.sandbox, "encrypted_volumes", [])
	if !ok {
		enc = []any{}
	}
	if !setEq(arr(in["encrypted_volumes"]), arr(enc)) {
		d.add("create_sandbox: encrypted_volumes = %s, policy allows %s", j(in["encrypted_volumes"]), j(enc))
	}
	sv, ok := sb["sealed_volumes"] // object.get(p.sandbox, "sealed_volumes", [])
	if !ok {
		sv = []any{}
	}
	if !setEq(arr(in["sealed_volumes"]), arr(sv)) {
		d.add("create_sandbox: sealed_volumes = %s, policy allows %s", j(in["sealed_volumes"]), j(sv))
	}
}

var scalarFields = []string{"run_as_user", "run_as_group", "run_as_non_root", "read_only_root_filesystem", "no_new_privileges"}

// flagFields are booleans a policy of an older release leaves out: absent
// is false.
var flagFields = []string{"share_pid_namespace", "stdin", "tty"}

func (n *native) createContainer(in jsonObj, d *denials) {
	name := str(in["name"])
	cv, exists := get(obj(n.p["containers"]), name)
	if !exists {
		d.add("create_container %q: no such container in the policy (policy has %s)", name, keys(obj(n.p["containers"])))
	}
	if truthy(obj(in["state"])["created"]) {
		d.add("create_container %q: the container already exists; a policy container can be created once at a time", name)
	}
	if truthy(in["privileged"]) {
		d.add("create_container %q: privileged = true, policy allows false", name)
	}
	if !exists {
		return
	}
	c := obj(cv)
	image := str(c["image"])
	if str(in["image"]) != image {
		d.add("create_container %q: image = %q, policy allows %q", name, str(in["image"]), image)
	} else if img, ok := get(obj(n.p["images"]), image); ok {
		signed := len(arr(obj(img)["signed_by"])) > 0
		if signed && str(in["image_signer"]) == "" {
			d.add("create_container %q: image %q must be signed by a signer of the policy, and no signature was verified", name, image)
		}
		// A signed image's digests are pinned only when the policy
		// says them too.
		if !signed || str(obj(img)["digest"]) != "" {
			if str(in["image_digest"]) != str(obj(img)["digest"]) {
				d.add("create_container %q: image digest = %s, policy allows %s", name, str(in["image_digest"]), str(obj(img)["digest"]))
			}
			if str(in["config_digest"]) != str(obj(img)["config_digest"]) {
				d.add("create_container %q: image config = %s, policy allows %s", name, str(in["config_digest"]), str(obj(img)["config_digest"]))
			}
		}
	}
	args, want := arr(in["args"]), arr(c["args"])
	if len(args) == len(want) {
		for i := range want {
			if !reflect.DeepEqual(args[i], want[i]) {
				d.add("create_container %q: args[%d] = %q, policy allows %q", name, i, str(args[i]), str(want[i]))
			}
		}
	} else {
		d.add("create_container %q: args = %s, policy allows %s", name, j(args), j(want))
	}
	env := arr(in["env"])
	for _, e := range env {
		if !n.envAllowed(name, str(e)) {
			d.add("create_container %q: env %s is not allowed by the policy", name, n.envShown(str(e)))
		}
	}
	for _, e := range arr(c["env"]) {
		if !slices.Contains(env, e) {
			d.add("create_container %q: env %s required by the policy is missing", name, n.envShown(str(e)))
		}
	}
	if str(in["working_dir"]) != str(c["working_dir"]) {
		d.add("create_container %q: working_dir = %q, policy allows %q", name, str(in["working_dir"]), str(c["working_dir"]))
	}
	for _, f := range scalarFields {
		if !reflect.DeepEqual(in[f], c[f]) {
			d.add("create_container %q: %s = %s, policy allows %s", name, f, j(in[f]), j(c[f]))
		}
	}
	if sg := append([]any{}, arr(c["supplemental_groups"])...); !setEq(arr(in["supplemental_groups"]), sg) {
		d.add("create_container %q: supplemental_groups = %s, policy allows %s", name, j(in["supplemental_groups"]), j(sg))
	}
	if str(in["seccomp"]) != str(c["seccomp"]) {
		d.add("create_container %q: seccomp = %q, policy allows %q", name, str(in["seccomp"]), str(c["seccomp"]))
	}
	for _, f := range flagFields {
		if truthy(in[f]) != truthy(c[f]) {
			d.add("create_container %q: %s = %v, policy allows %v", name, f, truthy(in[f]), truthy(c[f]))
		}
	}
	if !setEq(arr(in["capabilities"]), arr(c["capabilities"])) {
		d.add("create_container %q: capabilities = %s, policy allows %s", name, j(in["capabilities"]), j(c["capabilities"]))
	}
	if !setEq(arr(in["mounts"]), arr(c["mounts"])) {
		d.add("create_container %q: mounts = %s, policy allows %s", name, j(in["mounts"]), j(c["mounts"]))
	}
	if !reflect.DeepEqual(in["resources"], c["resources"]) {
		d.add("create_container %q: resources = %s, policy allows %s", name, j(in["resources"]), j(c["resources"]))
	}
}

func (n *native) envAllowed(container, e string) bool {
	if n.envIndex[container][e] {
		return true
	}
	for _, re := range n.patterns[container] {
		if re.MatchString(e) {
			return true
		}
	}
	return false
}

func (n *native) execProcess(in jsonObj, d *denials) {
	name := str(in["container"])
	running := truthy(obj(in["state"])["running"])
	cv, exists := get(obj(n.p["containers"]), name)
	c := obj(cv)
	if exists && truthy(c["exec_any"]) && running {
		return
	}
	if !exists {
		d.add("exec_process %q: no such container in the policy", name)
		return
	}
	if !running {
		d.add("exec_process %q: the container is not running", name)
	}
	if truthy(c["exec_any"]) {
		return
	}
	if !slices.ContainsFunc(arr(c["exec"]), func(a any) bool { return reflect.DeepEqual(a, in["args"]) }) {
		allowed := "no exec"
		if len(arr(c["exec"])) > 0 {
			allowed = j(c["exec"])
		}
		d.add("exec_process %q: args = %s, policy allows %s", name, j(in["args"]), allowed)
	}
	if env := arr(in["env"]); len(env) > 0 {
		shown := make([]string, len(env))
		for i, e := range env {
			shown[i] = n.envShown(str(e))
		}
		d.add("exec_process %q: env = [%s], policy allows none (an exec inherits the container's environment)", name, strings.Join(shown, ", "))
	}
	if wd := str(in["working_dir"]); wd != "" {
		d.add("exec_process %q: working_dir = %q, policy allows none (an exec runs in the container's working directory)", name, wd)
	}
	if num(in["stdin_bytes"]) > 0 && !truthy(c["exec_stdin"]) {
		d.add("exec_process %q: stdin of %d bytes, policy allows none (exec_stdin = false)", name, int64(num(in["stdin_bytes"])))
	}
	if truthy(in["open_stdin"]) && !truthy(c["exec_stdin"]) {
		d.add("exec_process %q: an open stdin (interactive exec), policy allows none (exec_stdin = false)", name)
	}
}
