package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// maxSysctls bounds a sandbox's sysctls.
const maxSysctls = 64

var sysctlNameRE = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)

// namespacedSysctl reports whether a sysctl belongs to the sandbox's
// network or IPC namespace (what Kubernetes calls namespaced sysctls), so
// setting it touches only the sandbox.
func namespacedSysctl(name string) bool {
	switch {
	case strings.HasPrefix(name, "net."), strings.HasPrefix(name, "fs.mqueue."),
		strings.HasPrefix(name, "kernel.shm"), strings.HasPrefix(name, "kernel.msg"), name == "kernel.sem":
		return true
	}
	return false
}

// applySysctls sets namespaced sysctls in the agent's namespaces (the
// sandbox's network and IPC namespaces, which its containers share). The
// policy decided which; this checks their form.
func (a *Agent) applySysctls(s map[string]string) error {
	if len(s) > maxSysctls {
		return fmt.Errorf("%d sysctls; at most %d: %w", len(s), maxSysctls, errInvalid)
	}
	names := make([]string, 0, len(s))
	for k := range s {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := s[k]
		if !sysctlNameRE.MatchString(k) || !namespacedSysctl(k) {
			return fmt.Errorf("sysctl %q: only namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) can be set in a sandbox: %w", k, errInvalid)
		}
		if len(v) > 256 || strings.ContainsAny(v, "\n\x00") {
			return fmt.Errorf("sysctl %s: value %q: %w", k, v, errInvalid)
		}
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	if len(s) > 0 {
		a.log.Info("sysctls set", "count", len(s))
	}
	return nil
}
