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
