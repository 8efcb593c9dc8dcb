package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/router"
)

func TestPrintStatusDualStack(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, node.Status{
		Node: node.NodeStatus{Name: "a", Network: "10.244.0.0/16", Subnet: "10.244.1.0/24", Address: "10.244.1.0",
			Network6: "fd00:10:244::/56", Subnet6: "fd00:10:244:1::/64", Address6: "fd00:10:244:1::", TUN: "weft0", MTU: 1472},
		Peers: []router.PeerStatus{{Name: "b", Subnet: "10.244.2.0/24", Subnet6: "fd00:10:244:2::/64", Underlay: "192.0.2.2:8285", State: "alive", Via: router.ViaTunnel}},
	})
	for _, want := range []string{"subnet    10.244.1.0/24 of 10.244.0.0/16, address 10.244.1.0", "subnet6   fd00:10:244:1::/64 of fd00:10:244::/56, address fd00:10:244:1::",
		"10.244.2.0/24,fd00:10:244:2::/64"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, b.String())
		}
	}
}
