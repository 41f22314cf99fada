package agent

import (
	"fmt"
	"net"
	"regexp"
	"strings"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// Bounds on a DNS configuration (those of Kubernetes' dnsConfig, and of
// glibc's resolver for servers).
const (
	maxDNSServers  = 3
	maxDNSSearches = 32
	maxDNSOptions  = 16
)

var (
	dnsNameRE   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.?$`)
	dnsOptionRE = regexp.MustCompile(`^[a-z0-9-]{1,32}(:[0-9]{1,5})?$`)
)

// resolvConf renders a DNS configuration from the host as a resolv.conf,
// after checking its form: IP literals, domain names, option tokens. It
// returns "" for an empty configuration.
func resolvConf(d *agentv1.DNSConfig) (string, error) {
	if len(d.GetServers())+len(d.GetSearches())+len(d.GetOptions()) == 0 {
		return "", nil
	}
	if len(d.GetServers()) > maxDNSServers || len(d.GetSearches()) > maxDNSSearches || len(d.GetOptions()) > maxDNSOptions {
		return "", fmt.Errorf("dns: %d servers, %d searches, %d options; at most %d, %d and %d: %w",
			len(d.GetServers()), len(d.GetSearches()), len(d.GetOptions()), maxDNSServers, maxDNSSearches, maxDNSOptions, errInvalid)
	}
	var b strings.Builder
	b.WriteString("# the pod's DNS configuration, from the host (kubelet)\n")
	for _, s := range d.GetServers() {
		if net.ParseIP(s) == nil {
			return "", fmt.Errorf("dns: server %q is not an IP address: %w", s, errInvalid)
		}
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(d.GetSearches()) > 0 {
		for _, s := range d.GetSearches() {
			if len(s) > 253 || !dnsNameRE.MatchString(s) {
				return "", fmt.Errorf("dns: search domain %q is not a domain name: %w", s, errInvalid)
			}
		}
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.GetSearches(), " "))
	}
	if len(d.GetOptions()) > 0 {
		for _, o := range d.GetOptions() {
			if !dnsOptionRE.MatchString(o) {
				return "", fmt.Errorf("dns: option %q is not a resolver option (name or name:number): %w", o, errInvalid)
			}
		}
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.GetOptions(), " "))
	}
	return b.String(), nil
}
