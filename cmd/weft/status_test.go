package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftnet/weft/bgp"
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

// A daemon that is starting (or stopping) answers /v1/status with 503:
// weft status says so and exits 1, over the metrics listener (--addr).
func TestStatusWhileStarting(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "starting (or stopping): no status yet", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code := cmdStatus(t.Context(), []string{"--addr", addr}, &stdout, &stderr); code != exitFailure {
		t.Errorf("exit %d, want %d", code, exitFailure)
	}
	if got := stderr.String(); !strings.Contains(got, "weft at "+addr+" is starting or stopping") || strings.Count(got, "\n") != 1 {
		t.Errorf("stderr %q, want one line saying the daemon is starting", got)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
}

func TestPrintStatusBGP(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, node.Status{
		Node: node.NodeStatus{Name: "a", Network: "10.244.0.0/16", Subnet: "10.244.1.0/24", Address: "10.244.1.0", TUN: "weft0", MTU: 1500},
		BGP: &node.BGPStatus{ASN: 64512, RouterID: "192.0.2.1", Announced: []string{"10.244.1.0/24 via 192.0.2.1"},
			ClusterRoute: []string{"10.244.0.0/16 via 192.0.2.254 src 10.244.1.0"},
			Neighbors: []bgp.NeighborStatus{
				{Addr: "192.0.2.254", ASN: 65000, State: "established", UptimeSeconds: 90, Sent: 1},
				{Addr: "192.0.2.253", ASN: 65099, State: "active", LastError: "sent notification: code 2(open) subcode 2(bad peer as)"}}},
	})
	for _, want := range []string{"bgp       AS 64512, router ID 192.0.2.1, announcing 10.244.1.0/24 via 192.0.2.1",
		"route     10.244.0.0/16 via 192.0.2.254 src 10.244.1.0", "NEIGHBOR", "192.0.2.254  65000  established  1m30s",
		"bad peer as"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	// Without BGP, no block.
	b.Reset()
	printStatus(&b, node.Status{})
	if strings.Contains(b.String(), "bgp") {
		t.Errorf("a status without BGP shows a bgp block:\n%s", b.String())
	}
}

// The data path and, on the kernel path, the VXLAN device's entries.
func TestPrintStatusKernel(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, node.Status{
		Node: node.NodeStatus{Name: "a", Network: "10.244.0.0/16", Subnet: "10.244.1.0/24", Address: "10.244.1.0", TUN: "weft0", MTU: 1450,
			Datapath: "kernel", DatapathReason: "--datapath auto: plaintext VXLAN, and the kernel has a VXLAN device"},
		Kernel: &node.KernelStatus{Device: "weft-vx", Index: 7, FilterPeers: []string{"192.0.2.2"},
			Routes:    []string{"10.244.2.0/24 via 10.244.2.0 dev weft-vx onlink"},
			Neighbors: []string{"10.244.2.0 lladdr 02:57:0a:f4:02:00 dev weft-vx permanent"},
			FDB:       []string{"02:57:0a:f4:02:00 dst 192.0.2.2 dev weft-vx self permanent"}, Error: "kernelvx: set neighbour: EPERM"},
	})
	for _, want := range []string{"datapath  kernel (--datapath auto: plaintext VXLAN, and the kernel has a VXLAN device)",
		"kernel    VXLAN device weft-vx (index 7), accepting VXLAN from 192.0.2.2",
		"          10.244.2.0/24 via 10.244.2.0 dev weft-vx onlink\n          10.244.2.0 lladdr 02:57:0a:f4:02:00 dev weft-vx permanent\n          02:57:0a:f4:02:00 dst 192.0.2.2 dev weft-vx self permanent\n",
		"error     kernelvx: set neighbour: EPERM"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printStatus(&b, node.Status{Node: node.NodeStatus{Name: "a", Datapath: "userspace", DatapathReason: "--datapath userspace (the default)"}})
	if !strings.Contains(b.String(), "datapath  userspace (--datapath userspace (the default))") || strings.Contains(b.String(), "kernel ") {
		t.Errorf("userspace status:\n%s", b.String())
	}
}
