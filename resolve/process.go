package resolve

import "strings"

// DefaultPath is the PATH a container gets when neither image nor spec set one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Args resolves the command line as Kubernetes does: a spec command replaces
// the image entrypoint and drops the image cmd; spec args replace the cmd.
func Args(command, args, entrypoint, cmd []string) []string {
	if len(command) > 0 {
		return append(append([]string{}, command...), args...)
	}
	out := append([]string{}, entrypoint...)
	if len(args) > 0 {
		return append(out, args...)
	}
	return append(out, cmd...)
}

// EnvVar is one name=value pair of a spec.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Env merges the image env with the spec env (the spec wins, order of first
// appearance kept) and adds PATH and HOSTNAME when missing (HOSTNAME only
// when the hostname is known).
func Env(imageEnv []string, spec []EnvVar, hostname string) []string {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range imageEnv {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	for _, e := range spec {
		set(e.Name, e.Value)
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH", DefaultPath)
	}
	if _, ok := vals["HOSTNAME"]; !ok && hostname != "" {
		set("HOSTNAME", hostname)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out
}
