package sandbox

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
	"cocoon.dev/cocoon/internal/proc"
)

// The devices the VM backend adds to a pod's network namespace.
const (
	podBridge = "cocoon-br0"
	podTap    = "cocoon-tap0"
)

// ipIn runs `ip args...` in the network namespace at netns.
func ipIn(netns string, args ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	c, err := proc.StartPinnedIn(cmd, netns)
	if err != nil {
		return nil, fmt.Errorf("ip %s: %w (install iproute2)", strings.Join(args, " "), err)
	}
	if err := c.Wait(); err != nil {
		return nil, fmt.Errorf("ip %s in the pod network namespace: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}

type ipAddr struct {
	IfName   string `json:"ifname"`
	Address  string `json:"address"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
	} `json:"addr_info"`
}

type ipRoute struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway"`
	Dev     string `json:"dev"`
}

// wirePodNetwork moves the pod's network (the interface CNI configured in
// netns) to a VM: a tap device and the CNI interface are bridged in the
// namespace, the interface's IPv4 addresses are taken off it, and the
// returned configuration gives them, and the namespace's routes, to the
// guest NIC (a new, locally administered MAC). QEMU must run in netns.
func wirePodNetwork(netns string) (tap, mac string, n *agentv1.Network, err error) {
	out, err := ipIn(netns, "-j", "addr", "show")
	if err != nil {
		return "", "", nil, err
	}
	var addrs []ipAddr
	if err := json.Unmarshal(out, &addrs); err != nil {
		return "", "", nil, fmt.Errorf("pod network: ip -j addr: %w", err)
	}
	var nic *ipAddr
	var cidrs []string
	for i := range addrs {
		a := &addrs[i]
		if a.IfName == "lo" || a.IfName == podBridge || a.IfName == podTap {
			continue
		}
		for _, ai := range a.AddrInfo {
			if ai.Family == "inet" && ai.Scope == "global" {
				nic = a
				cidrs = append(cidrs, fmt.Sprintf("%s/%d", ai.Local, ai.PrefixLen))
			}
		}
		if nic != nil {
			break
		}
	}
	if nic == nil {
		return "", "", nil, fmt.Errorf("pod network: no interface with an IPv4 address in %s (did CNI run?)", netns)
	}
	out, err = ipIn(netns, "-j", "-4", "route", "show")
	if err != nil {
		return "", "", nil, err
	}
	var routes []ipRoute
	if err := json.Unmarshal(out, &routes); err != nil {
		return "", "", nil, fmt.Errorf("pod network: ip -j route: %w", err)
	}
	n = &agentv1.Network{}
	for _, r := range routes {
		// Routes on the link itself (its subnet) follow from the guest's
		// address; the rest go through a gateway.
		if r.Dev != nic.IfName || r.Gateway == "" {
			continue
		}
		dst := r.Dst
		if dst == "default" {
			dst = "0.0.0.0/0"
		}
		n.Routes = append(n.Routes, &agentv1.NetworkRoute{Destination: dst, Gateway: r.Gateway})
	}
	var m [6]byte
	_, _ = rand.Read(m[:])
	m[0] = m[0]&0xfe | 0x02 // unicast, locally administered
	mac = net.HardwareAddr(m[:]).String()
	n.Interfaces = []*agentv1.NetworkInterface{{Mac: mac, Addresses: cidrs}}
	for _, step := range [][]string{
		{"link", "add", podBridge, "type", "bridge"},
		{"tuntap", "add", "dev", podTap, "mode", "tap"},
		{"addr", "flush", "dev", nic.IfName},
		{"link", "set", nic.IfName, "master", podBridge},
		{"link", "set", podTap, "master", podBridge},
		{"link", "set", podTap, "up"},
		{"link", "set", podBridge, "up"},
	} {
		if _, err := ipIn(netns, step...); err != nil {
			return "", "", nil, fmt.Errorf("pod network: %w", err)
		}
	}
	return podTap, mac, n, nil
}
