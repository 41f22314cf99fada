package agent

import (
	"strings"
	"testing"

	agentv1 "cocoon.dev/cocoon/api/agent/v1"
)

func TestNetworkCommands(t *testing.T) {
	byMAC := map[string]string{"02:00:00:00:00:01": "eth0"}
	n := &agentv1.Network{
		Interfaces: []*agentv1.NetworkInterface{{Mac: "02:00:00:00:00:01", Addresses: []string{"10.1.2.3/24"}}},
		Routes:     []*agentv1.NetworkRoute{{Destination: "0.0.0.0/0", Gateway: "10.1.2.1"}, {Destination: "10.9.0.0/16"}},
	}
	cmds, err := networkCommands(n, byMAC)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cmds {
		got = append(got, strings.Join(c, " "))
	}
	want := []string{"addr add 10.1.2.3/24 dev eth0", "link set eth0 up", "route add 0.0.0.0/0 via 10.1.2.1 dev eth0", "route add 10.9.0.0/16 dev eth0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q, want %q", got, want)
	}
	bad := map[string]*agentv1.Network{
		"unknown MAC":      {Interfaces: []*agentv1.NetworkInterface{{Mac: "02:00:00:00:00:09"}}},
		"bad MAC":          {Interfaces: []*agentv1.NetworkInterface{{Mac: "eth0; reboot"}}},
		"IPv6":             {Interfaces: []*agentv1.NetworkInterface{{Mac: "02:00:00:00:00:01", Addresses: []string{"fd00::1/64"}}}},
		"option injection": {Interfaces: []*agentv1.NetworkInterface{{Mac: "02:00:00:00:00:01", Addresses: []string{"-batch /etc/x"}}}},
		"bad gateway":      {Interfaces: n.Interfaces, Routes: []*agentv1.NetworkRoute{{Destination: "0.0.0.0/0", Gateway: "x"}}},
		"route only":       {Routes: []*agentv1.NetworkRoute{{Destination: "0.0.0.0/0"}}},
		"too many routes":  {Interfaces: n.Interfaces, Routes: make([]*agentv1.NetworkRoute, maxNetRoutes+1)},
	}
	for name, b := range bad {
		if _, err := networkCommands(b, byMAC); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestResolvConf(t *testing.T) {
	got, err := resolvConf(&agentv1.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5", "edns0"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nameserver 10.96.0.10\n", "search default.svc.cluster.local svc.cluster.local\n", "options ndots:5 edns0\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in %q", want, got)
		}
	}
	if got, err := resolvConf(nil); got != "" || err != nil {
		t.Errorf("empty: %q %v", got, err)
	}
	for name, d := range map[string]*agentv1.DNSConfig{
		"server injection": {Servers: []string{"10.0.0.1\nnameserver 6.6.6.6"}},
		"not an IP":        {Servers: []string{"dns.example"}},
		"search injection": {Searches: []string{"a.example\noptions debug"}},
		"option injection": {Options: []string{"ndots:5 rotate"}},
		"too many servers": {Servers: []string{"1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"}},
	} {
		if _, err := resolvConf(d); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSysctlForm(t *testing.T) {
	a, _ := startAgentWith(t, func(*Config) {})
	for name, s := range map[string]map[string]string{
		"not namespaced": {"kernel.panic": "1"},
		"path escape":    {"net/../../kernel/panic": "1"},
		"dots only":      {"net..x": "1"},
		"value newline":  {"net.ipv4.ip_forward": "1\n"},
	} {
		if err := a.applySysctls(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
