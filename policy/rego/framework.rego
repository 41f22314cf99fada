# The cocoon policy framework, version 1: one rule per agent API method.
# data.policy is the policy's data; input is the request as the agent will
# carry it out (command line and environment already resolved). Each rule is
# a decision {"allowed": bool, "reasons": [...]}; a reason names the
# enforcement point, the container, the field, what was asked and what the
# policy allows.
package cocoon.framework

import rego.v1

p := data.policy

# An allow-all policy (cocoon policy allow-all) allows every request: the
# host decides what runs, and the report's HOST_DATA says so.
allow_all if object.get(p, "allow_all", false) == true

decision(_) := allow if allow_all

decision(denials) := {"allowed": count(denials) == 0, "reasons": sort([d | some d in denials])} if not allow_all

allow := {"allowed": true, "reasons": []}

j(x) := json.marshal(x)

# list is a policy list, or [] where a policy leaves it null.
list(x) := x if is_array(x)

list(x) := [] if not is_array(x)

env_shown(e) := e if p.debug

env_shown(e) := concat("=", [split(e, "=")[0], "<redacted>"]) if not p.debug

# --- CreateSandbox -----------------------------------------------------------

create_sandbox := decision(cs_deny)

cs_deny contains sprintf("create_sandbox: name = %q, policy allows %q", [input.name, p.sandbox.name]) if {
	input.name != p.sandbox.name
}

# An empty hostname (a workload's pod template) admits the one the host
# names the replica with.
cs_deny contains sprintf("create_sandbox: hostname = %q, policy allows %q", [input.hostname, p.sandbox.hostname]) if {
	p.sandbox.hostname != ""
	input.hostname != p.sandbox.hostname
}

cs_deny contains sprintf("create_sandbox: volumes = %s, policy allows %s", [j(input.volumes), j(p.sandbox.volumes)]) if {
	{v | some v in input.volumes} != {v | some v in p.sandbox.volumes}
}

cs_deny contains sprintf("create_sandbox: encrypted_volumes = %s, policy allows %s", [j(input.encrypted_volumes), j(object.get(p.sandbox, "encrypted_volumes", []))]) if {
	{v | some v in input.encrypted_volumes} != {v | some v in object.get(p.sandbox, "encrypted_volumes", [])}
}

cs_deny contains sprintf("create_sandbox: sealed_volumes = %s, policy allows %s", [j(input.sealed_volumes), j(object.get(p.sandbox, "sealed_volumes", []))]) if {
	{v | some v in input.sealed_volumes} != {v | some v in object.get(p.sandbox, "sealed_volumes", [])}
}

# The sysctls containerd sets on every pod sandbox by default.
runtime_sysctls := {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}

cs_deny contains sprintf("create_sandbox: sysctl %s = %q is not allowed by the policy", [k, v]) if {
	some k, v in input.sysctls
	object.get(object.get(p.sandbox, "sysctls", {}), k, null) != v
	object.get(runtime_sysctls, k, null) != v
}

cs_deny contains sprintf("create_sandbox: sysctl %s = %q required by the policy is missing", [k, v]) if {
	some k, v in object.get(p.sandbox, "sysctls", {})
	object.get(input.sysctls, k, null) != v
}

# --- PullImage ---------------------------------------------------------------

pull_image := decision(pi_deny)

pi_deny contains sprintf("pull_image: image %q is not in the policy (policy allows %s)", [input.image, j(object.keys(p.images))]) if {
	not p.images[input.image]
}

# --- CreateContainer ---------------------------------------------------------

# The fast path: the request is exactly what the policy allows. The
# detailed denial rules below run only when it is not.
create_container := allow if cc_exact

create_container := decision(cc_deny) if not cc_exact

cc_exact if {
	c := p.containers[input.name]
	not input.state.created
	input.image == c.image
	image_pinned(p.images[c.image])
	input.args == c.args
	count(unindexed_env) == 0
	count(input.env) == count(c.env)
	input.working_dir == c.working_dir
	input.run_as_user == c.run_as_user
	input.run_as_group == c.run_as_group
	input.run_as_non_root == c.run_as_non_root
	input.read_only_root_filesystem == c.read_only_root_filesystem
	input.no_new_privileges == c.no_new_privileges
	every f in flag_fields {
		input[f] == object.get(c, f, false)
	}
	input.seccomp == object.get(c, "seccomp", "")
	{g | some g in input.supplemental_groups} == {g | some g in list(object.get(c, "supplemental_groups", []))}
	input.privileged == false
	input.capabilities == c.capabilities
	input.mounts == c.mounts
	input.resources == c.resources
}

cc_deny contains sprintf("create_container %q: no such container in the policy (policy has %s)", [input.name, j(object.keys(p.containers))]) if {
	not p.containers[input.name]
}

cc_deny contains sprintf("create_container %q: the container already exists; a policy container can be created once at a time", [input.name]) if {
	input.state.created
}

cc_deny contains msg if {
	some msg in cc_field_deny
}

cc_field_deny contains sprintf("create_container %q: image = %q, policy allows %q", [input.name, input.image, c.image]) if {
	c := p.containers[input.name]
	input.image != c.image
}

# An image is pinned by its digests, or (signed_by) by who signed it: the
# agent verified a signature of a policy signer as it pulled the image.
# A signed image's digests are checked only when the policy says them too.
image_signed(img) if count(object.get(img, "signed_by", [])) > 0

digests_pinned(img) if not image_signed(img)

digests_pinned(img) if {
	image_signed(img)
	img.digest != ""
}

image_pinned(img) if {
	not image_signed(img)
	input.image_digest == img.digest
	input.config_digest == img.config_digest
}

image_pinned(img) if {
	image_signed(img)
	input.image_signer != ""
	not digests_pinned(img)
}

image_pinned(img) if {
	image_signed(img)
	input.image_signer != ""
	digests_pinned(img)
	input.image_digest == img.digest
	input.config_digest == img.config_digest
}

cc_field_deny contains sprintf("create_container %q: image %q must be signed by a signer of the policy, and no signature was verified", [input.name, c.image]) if {
	c := p.containers[input.name]
	input.image == c.image
	image_signed(p.images[c.image])
	input.image_signer == ""
}

cc_field_deny contains sprintf("create_container %q: image digest = %s, policy allows %s", [input.name, input.image_digest, p.images[c.image].digest]) if {
	c := p.containers[input.name]
	input.image == c.image
	digests_pinned(p.images[c.image])
	input.image_digest != p.images[c.image].digest
}

cc_field_deny contains sprintf("create_container %q: image config = %s, policy allows %s", [input.name, input.config_digest, p.images[c.image].config_digest]) if {
	c := p.containers[input.name]
	input.image == c.image
	digests_pinned(p.images[c.image])
	input.config_digest != p.images[c.image].config_digest
}

cc_field_deny contains sprintf("create_container %q: args[%d] = %q, policy allows %q", [input.name, i, input.args[i], c.args[i]]) if {
	c := p.containers[input.name]
	count(input.args) == count(list(c.args))
	some i, a in list(c.args)
	input.args[i] != a
}

cc_field_deny contains sprintf("create_container %q: args = %s, policy allows %s", [input.name, j(input.args), j(c.args)]) if {
	c := p.containers[input.name]
	count(input.args) != count(list(c.args))
}

# Entries of the environment that are not exact entries of the policy
# (entries are unique, so none and equal counts mean equal sets).
unindexed_env := [e | some e in input.env; not data.index.env[input.name][e]]

env_allowed(_, e) if data.index.env[input.name][e]

env_allowed(c, e) if {
	not data.index.env[input.name][e]
	some pat in c.env_patterns
	regex.match(pat, e)
}

cc_field_deny contains sprintf("create_container %q: env %s is not allowed by the policy", [input.name, env_shown(e)]) if {
	c := p.containers[input.name]
	some e in input.env
	not env_allowed(c, e)
}

cc_field_deny contains sprintf("create_container %q: env %s required by the policy is missing", [input.name, env_shown(e)]) if {
	c := p.containers[input.name]
	some e in c.env
	not e in input.env
}

cc_field_deny contains sprintf("create_container %q: working_dir = %q, policy allows %q", [input.name, input.working_dir, c.working_dir]) if {
	c := p.containers[input.name]
	input.working_dir != c.working_dir
}

scalar_fields := ["run_as_user", "run_as_group", "run_as_non_root", "read_only_root_filesystem", "no_new_privileges"]

cc_field_deny contains sprintf("create_container %q: %s = %s, policy allows %s", [input.name, f, j(input[f]), j(c[f])]) if {
	c := p.containers[input.name]
	some f in scalar_fields
	input[f] != c[f]
}

# Flags a policy of an older release leaves out: absent is false.
flag_fields := ["share_pid_namespace", "stdin", "tty"]

cc_field_deny contains sprintf("create_container %q: %s = %v, policy allows %v", [input.name, f, input[f], object.get(c, f, false)]) if {
	c := p.containers[input.name]
	some f in flag_fields
	input[f] != object.get(c, f, false)
}

cc_field_deny contains sprintf("create_container %q: seccomp = %q, policy allows %q", [input.name, input.seccomp, object.get(c, "seccomp", "")]) if {
	c := p.containers[input.name]
	input.seccomp != object.get(c, "seccomp", "")
}

cc_field_deny contains sprintf("create_container %q: supplemental_groups = %s, policy allows %s", [input.name, j(input.supplemental_groups), j(list(object.get(c, "supplemental_groups", [])))]) if {
	c := p.containers[input.name]
	{g | some g in input.supplemental_groups} != {g | some g in list(object.get(c, "supplemental_groups", []))}
}

cc_field_deny contains sprintf("create_container %q: privileged = true, policy allows false", [input.name]) if {
	input.privileged
}

cc_field_deny contains sprintf("create_container %q: capabilities = %s, policy allows %s", [input.name, j(input.capabilities), j(c.capabilities)]) if {
	c := p.containers[input.name]
	{x | some x in input.capabilities} != {x | some x in c.capabilities}
}

cc_field_deny contains sprintf("create_container %q: mounts = %s, policy allows %s", [input.name, j(input.mounts), j(c.mounts)]) if {
	c := p.containers[input.name]
	{x | some x in input.mounts} != {x | some x in c.mounts}
}

cc_field_deny contains sprintf("create_container %q: resources = %s, policy allows %s", [input.name, j(input.resources), j(c.resources)]) if {
	c := p.containers[input.name]
	input.resources != c.resources
}

# --- Container lifecycle -----------------------------------------------------

start_container := decision(sc_deny)

sc_deny contains sprintf("start_container %q: the policy did not allow creating it", [input.container]) if {
	not input.state.created
}

remove_container := allow

wait_container := allow

list_containers := allow

stats := allow

pull_progress := allow

shutdown := allow

get_evidence := allow

# --- Exec, signals, stdio ----------------------------------------------------

exec_process := allow if {
	p.containers[input.container].exec_any
	input.state.running
}

exec_process := decision(ex_deny) if {
	not p.containers[input.container].exec_any
}

exec_process := decision(ex_deny) if {
	not input.state.running
}

ex_deny contains sprintf("exec_process %q: no such container in the policy", [input.container]) if {
	not p.containers[input.container]
}

ex_deny contains sprintf("exec_process %q: the container is not running", [input.container]) if {
	p.containers[input.container]
	not input.state.running
}

ex_deny contains sprintf("exec_process %q: args = %s, policy allows %s", [input.container, j(input.args), exec_allowed_text(c)]) if {
	c := p.containers[input.container]
	not c.exec_any
	not input.args in list(c.exec)
}

# An exec inherits the container's pinned environment, working directory and
# user; the host may not change them, nor feed an allowed command a script on
# standard input unless the policy says so.
ex_deny contains sprintf("exec_process %q: env = [%s], policy allows none (an exec inherits the container's environment)", [input.container, concat(", ", [env_shown(e) | some e in input.env])]) if {
	c := p.containers[input.container]
	not c.exec_any
	count(input.env) > 0
}

ex_deny contains sprintf("exec_process %q: working_dir = %q, policy allows none (an exec runs in the container's working directory)", [input.container, input.working_dir]) if {
	c := p.containers[input.container]
	not c.exec_any
	input.working_dir != ""
}

ex_deny contains sprintf("exec_process %q: stdin of %d bytes, policy allows none (exec_stdin = false)", [input.container, input.stdin_bytes]) if {
	c := p.containers[input.container]
	not c.exec_any
	input.stdin_bytes > 0
	not c.exec_stdin
}

ex_deny contains sprintf("exec_process %q: an open stdin (interactive exec), policy allows none (exec_stdin = false)", [input.container]) if {
	c := p.containers[input.container]
	not c.exec_any
	input.open_stdin
	not c.exec_stdin
}

exec_allowed_text(c) := "no exec" if count(list(c.exec)) == 0

exec_allowed_text(c) := j(c.exec) if count(list(c.exec)) > 0

signal_container := decision(sg_deny)

sg_deny contains sprintf("signal_container %q: no such container in the policy", [input.container]) if {
	not p.containers[input.container]
}

sg_deny contains sprintf("signal_container %q: signal = %d, policy allows %s", [input.container, input.signal, j(c.signals)]) if {
	c := p.containers[input.container]
	not input.signal in list(c.signals)
}

read_logs := decision(rl_deny)

rl_deny contains sprintf("read_logs %q: no such container in the policy", [input.container]) if {
	not p.containers[input.container]
}

# An exec's output is the exec's (the policy allowed the command): only a
# container's own output is subject to stdio.
rl_deny contains sprintf("read_logs %q: stdio = false: the policy does not let the host read this container's output", [input.container]) if {
	c := p.containers[input.container]
	input.exec_id == ""
	not c.stdio
}

# --- Interactive I/O -----------------------------------------------------------

# A container's stdin is pinned at create (stdin); an exec's stdin is open
# only when exec_process allowed it (exec_stdin), and the agent refuses a
# write to any other.
write_stdin := decision(ws_deny)

ws_deny contains sprintf("write_stdin %q: no such container in the policy", [input.container]) if {
	not p.containers[input.container]
}

ws_deny contains sprintf("write_stdin %q: stdin = false: the policy gives this container no stdin", [input.container]) if {
	c := p.containers[input.container]
	input.exec_id == ""
	not object.get(c, "stdin", false)
}

resize_terminal := decision(rt_deny)

rt_deny contains sprintf("resize_terminal %q: no such container in the policy", [input.container]) if {
	not p.containers[input.container]
}
