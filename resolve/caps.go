// Package resolve is how a container's process is derived from its spec
// and its image config, with Kubernetes semantics. The agent uses it to build
// the runtime spec and the policy engine to check what will really run, so
// the two can never disagree.
package resolve

import (
	"fmt"
	"slices"
	"strings"
)

// defaultCaps is the capability set containers get by default, the same as
// Docker's and containerd's defaults.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// DefaultCaps returns the default capability set (a copy).
func DefaultCaps() []string { return slices.Clone(defaultCaps) }

var knownCaps = []string{
	"CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE", "CAP_LINUX_IMMUTABLE",
	"CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_CHROOT", "CAP_SYS_MODULE",
	"CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_WAKE_ALARM",
}

// CanonicalCap turns "net_admin", "NET_ADMIN" or "CAP_NET_ADMIN" into
// "CAP_NET_ADMIN"; "ALL" stays "ALL".
func CanonicalCap(c string) (string, error) {
	u := strings.ToUpper(strings.TrimSpace(c))
	if u == "ALL" {
		return u, nil
	}
	if !strings.HasPrefix(u, "CAP_") {
		u = "CAP_" + u
	}
	if !slices.Contains(knownCaps, u) {
		return "", fmt.Errorf("unknown capability %q", c)
	}
	return u, nil
}

// Caps applies add and drop to the default set, Kubernetes style: drop
// ALL empties the defaults, add ALL grants every capability.
func Caps(add, drop []string) ([]string, error) {
	set := slices.Clone(defaultCaps)
	for _, d := range drop {
		c, err := CanonicalCap(d)
		if err != nil {
			return nil, fmt.Errorf("capabilities.drop: %w", err)
		}
		if c == "ALL" {
			set = nil
			continue
		}
		set = slices.DeleteFunc(set, func(s string) bool { return s == c })
	}
	for _, a := range add {
		c, err := CanonicalCap(a)
		if err != nil {
			return nil, fmt.Errorf("capabilities.add: %w", err)
		}
		if c == "ALL" {
			set = slices.Clone(knownCaps)
			continue
		}
		if !slices.Contains(set, c) {
			set = append(set, c)
		}
	}
	slices.Sort(set)
	return set, nil
}
