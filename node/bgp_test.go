package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	wbgp "github.com/weftnet/weft/bgp"
	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/router"
)

// tor is a gobgp server on loopback playing the top-of-rack router.
type tor struct {
	srv  *server.BgpServer
	port uint16
}

func startTOR(t *testing.T) *tor {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	r := &tor{srv: server.NewBgpServer(), port: port}
	done := make(chan struct{})
	go func() { defer close(done); r.srv.Serve() }()
	t.Cleanup(func() { r.srv.Stop(); <-done })
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 65000, RouterId: "127.0.0.254", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 64512},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// routes is the router's IPv4 table: prefix to next hop.
func (r *tor) routes() map[netip.Prefix]netip.Addr {
	out := map[netip.Prefix]netip.Addr{}
	_ = r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC}, func(prefix bgp.NLRI, paths []*apiutil.Path) {
		for _, p := range paths {
			pfx, err := netip.ParsePrefix(prefix.String())
			if err != nil || p.Withdrawal {
				continue
			}
			for _, a := range p.Attrs {
				if nh, ok := a.(*bgp.PathAttributeNextHop); ok {
					out[pfx] = nh.Value
				}
			}
		}
	})
	return out
}

func (r *tor) want(want map[netip.Prefix]netip.Addr) func() error {
	return func() error {
		if got := r.routes(); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("router's table %v, want %v", got, want)
		}
		return nil
	}
}

func bgpHost(t *testing.T, r *tor, subnet string, enc encap.Kind) *host {
	h := newHost(t, fakes.NewHub(), "a", 2, subnet)
	h.s.Encap = enc
	h.s.BGP = BGPSettings{Enabled: true, ASN: 64512}
	h.s.Live.BGPPeers = []wbgp.Neighbor{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port}}
	return h
}

// TestBGPAnnouncements: a node announces its subnet once ready, with its
// underlay address as next hop; a subnet move announces the new one and
// withdraws the old; a reload that removes the neighbour closes its
// session; a reload that adds it back reopens it; shutdown withdraws.
func TestBGPAnnouncements(t *testing.T) {
	r := startTOR(t)
	h := bgpHost(t, r, "", encap.UDP)
	h.mustStart()
	under := netip.MustParseAddr("127.0.0.2")
	first := family.First(h.n.getLocal().Subnets)
	eventually(t, "the subnet announced", r.want(map[netip.Prefix]netip.Addr{first: under}))
	eventually(t, "the status", func() error {
		st := h.n.Status()
		if st.BGP == nil || len(st.BGP.Neighbors) != 1 || !st.BGP.Neighbors[0].Up() || st.BGP.RouterID != "127.0.0.2" || len(st.BGP.Announced) != 1 {
			return fmt.Errorf("bgp status %+v", st.BGP)
		}
		return nil
	})

	h.n.moveSubnet(router.Conflict{Subnet: first, Winner: "b"})
	moved := family.First(h.n.getLocal().Subnets)
	if moved == first {
		t.Fatal("the subnet did not move")
	}
	eventually(t, "the move announced", r.want(map[netip.Prefix]netip.Addr{moved: under}))

	s := h.s
	s.Live.BGPPeers = nil
	changed, err := h.n.Reload(s)
	if err != nil || fmt.Sprint(changed) != "[bgpPeers]" {
		t.Fatalf("reload: %v %v", changed, err)
	}
	eventually(t, "the routes gone with the session", r.want(map[netip.Prefix]netip.Addr{}))
	if st := h.n.Status(); len(st.BGP.Neighbors) != 0 {
		t.Errorf("neighbours after the reload: %+v", st.BGP.Neighbors)
	}
	if _, err := h.n.Reload(h.s); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the session back", r.want(map[netip.Prefix]netip.Addr{moved: under}))

	// BGP settings other than the neighbours need a restart.
	s = h.s
	s.BGP.ASN = 64513
	if _, err := h.n.Reload(s); err == nil {
		t.Error("a reload changed the local AS")
	}

	h.stop()
	eventually(t, "the withdrawal at shutdown", r.want(map[netip.Prefix]netip.Addr{}))
}

// TestBGPNativeRouting: with encap none the TUN holds its address alone
// and the cluster network goes to the neighbour on our segment, with our
// overlay address as source; shutdown removes the route.
func TestBGPNativeRouting(t *testing.T) {
	r := startTOR(t)
	h := bgpHost(t, r, "10.244.7.0/24", encap.None)
	h.mustStart()
	if got := family.First(h.dev.Addrs()); got != netip.MustParsePrefix("10.244.7.0/32") {
		t.Errorf("TUN address %s, want 10.244.7.0/32", got)
	}
	eventually(t, "the cluster route", func() error {
		routes := h.kernel.Routes()
		rt, ok := routes[network]
		if !ok || rt.Via != netip.MustParseAddr("127.0.0.1") || rt.Src != netip.MustParseAddr("10.244.7.0") {
			return fmt.Errorf("routes %v", routes)
		}
		return nil
	})
	eventually(t, "the subnet announced", r.want(map[netip.Prefix]netip.Addr{netip.MustParsePrefix("10.244.7.0/24"): netip.MustParseAddr("127.0.0.2")}))
	h.stop()
	routes := h.kernel.Routes()
	if _, ok := routes[network]; ok {
		t.Errorf("the cluster route is left after shutdown: %v", routes)
	}
}
