package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

// Bounds on a network configuration from the host.
const (
	maxNetInterfaces = 8
	maxNetAddresses  = 16
	maxNetRoutes     = 64
)

// ipCmd is one `ip` command of a network configuration.
type ipCmd []string

// networkCommands checks a network configuration from the host and turns it
// into `ip` commands for the interfaces found by MAC. It refuses anything
// but well-formed IPv4 addresses and routes on the named interfaces.
func networkCommands(n *agentv1.Network, byMAC map[string]string) ([]ipCmd, error) {
	ifs, routes := n.GetInterfaces(), n.GetRoutes()
	if len(ifs) > maxNetInterfaces || len(routes) > maxNetRoutes {
		return nil, fmt.Errorf("network: %d interfaces and %d routes; at most %d and %d: %w", len(ifs), len(routes), maxNetInterfaces, maxNetRoutes, errInvalid)
	}
	var cmds []ipCmd
	var dev string
	for _, i := range ifs {
		mac, err := net.ParseMAC(i.GetMac())
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("network: interface MAC %q is not a MAC-48 address: %w", i.GetMac(), errInvalid)
		}
		name, ok := byMAC[mac.String()]
		if !ok {
			return nil, fmt.Errorf("network: no interface has MAC %s in this VM: %w", mac, errInvalid)
		}
		if len(i.GetAddresses()) > maxNetAddresses {
			return nil, fmt.Errorf("network: interface %s has %d addresses; at most %d: %w", mac, len(i.GetAddresses()), maxNetAddresses, errInvalid)
		}
		for _, a := range i.GetAddresses() {
			ip, _, err := net.ParseCIDR(a)
			if err != nil || ip.To4() == nil {
				return nil, fmt.Errorf("network: address %q is not an IPv4 CIDR: %w", a, errInvalid)
			}
			cmds = append(cmds, ipCmd{"addr", "add", a, "dev", name})
		}
		cmds = append(cmds, ipCmd{"link", "set", name, "up"})
		if dev == "" {
			dev = name
		}
	}
	for _, r := range routes {
		_, dst, err := net.ParseCIDR(r.GetDestination())
		if err != nil || dst.IP.To4() == nil {
			return nil, fmt.Errorf("network: route destination %q is not an IPv4 CIDR: %w", r.GetDestination(), errInvalid)
		}
		if dev == "" {
			return nil, fmt.Errorf("network: routes without an interface: %w", errInvalid)
		}
		c := ipCmd{"route", "add", dst.String()}
		if gw := r.GetGateway(); gw != "" {
			if ip := net.ParseIP(gw); ip == nil || ip.To4() == nil {
				return nil, fmt.Errorf("network: gateway %q is not an IPv4 address: %w", gw, errInvalid)
			}
			c = append(c, "via", gw)
		}
		cmds = append(cmds, append(c, "dev", dev))
	}
	return cmds, nil
}

// configureNetwork applies the pod network to a VM's interfaces with the
// busybox of the guest's root filesystem.
func (a *Agent) configureNetwork(ctx context.Context, n *agentv1.Network) error {
	if len(n.GetInterfaces()) == 0 && len(n.GetRoutes()) == 0 {
		return nil
	}
	if a.cfg.Busybox == "" {
		return fmt.Errorf("network: only a VM's agent configures a network (this sandbox shares the pod's network namespace): %w", errInvalid)
	}
	nics, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("network: list interfaces: %w", err)
	}
	byMAC := map[string]string{}
	for _, i := range nics {
		if len(i.HardwareAddr) == 6 {
			byMAC[i.HardwareAddr.String()] = i.Name
		}
	}
	cmds, err := networkCommands(n, byMAC)
	if err != nil {
		return err
	}
	for _, c := range cmds {
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, a.cfg.Busybox, append([]string{"ip"}, c...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("network: ip %s: %w: %s", strings.Join(c, " "), err, bytes.TrimSpace(out.Bytes()))
		}
	}
	a.log.Info("pod network configured", "interfaces", len(n.GetInterfaces()), "routes", len(n.GetRoutes()))
	return nil
}
