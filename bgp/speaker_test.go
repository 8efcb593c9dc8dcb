package bgp

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"go.uber.org/goleak"
)

// gobgp v4.9.0 does not always close a peer's outgoing queue when its
// server stops with the session up (the queue's buffer goroutine stays
// parked, seen on both sides, ours and the test's router, about one run
// in two): that goroutine is gobgp's, the one let pass. Ours (the server
// loop, the session poll) are waited for by Stop and checked here.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/eapache/channels.(*InfiniteChannel).infiniteBuffer"))
}

// router is a second gobgp server on loopback that plays the top-of-rack
// router: it listens, and accepts our speaker as a neighbour.
type router struct {
	srv  *server.BgpServer
	port int32
	done chan struct{}
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func startRouter(t *testing.T, asn uint32, neighborASN uint32) *router {
	t.Helper()
	return startRouterOn(t, asn, neighborASN, freePort(t))
}

func startRouterOn(t *testing.T, asn uint32, neighborASN uint32, port int32) *router {
	t.Helper()
	r := &router{srv: server.NewBgpServer(), port: port, done: make(chan struct{})}
	go func() { defer close(r.done); r.srv.Serve() }()
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: "127.0.0.2", ListenPort: r.port, ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	fam := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}}
	}
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:            &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: neighborASN},
		Transport:       &api.Transport{PassiveMode: true},
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: 30},
		AfiSafis:        []*api.AfiSafi{fam(api.Family_AFI_IP), fam(api.Family_AFI_IP6)},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Stop(); <-r.done })
	return r
}

// routes is the router's table: prefix to next hop.
func (r *router) routes(t *testing.T) map[netip.Prefix]netip.Addr {
	t.Helper()
	out := map[netip.Prefix]netip.Addr{}
	for _, f := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f}, func(prefix bgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.Withdrawal {
					continue
				}
				pfx, err := netip.ParsePrefix(prefix.String())
				if err != nil {
					t.Errorf("prefix %q: %v", prefix, err)
					continue
				}
				for _, a := range p.Attrs {
					switch a := a.(type) {
					case *bgp.PathAttributeNextHop:
						out[pfx] = a.Value
					case *bgp.PathAttributeMpReachNLRI:
						out[pfx] = a.Nexthop
					}
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSpeakerAnnouncesAndWithdraws(t *testing.T) {
	r := startRouter(t, 65000, 65101)
	changes := make(chan NeighborStatus, 16)
	sp, err := Start(context.Background(), Config{ASN: 65101, RouterID: netip.MustParseAddr("127.0.0.1"), ConnectRetry: time.Second,
		OnChange: func(s NeighborStatus) {
			select {
			case changes <- s:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			sp.Stop()
		}
	}()
	ctx := context.Background()
	if err := sp.SetNeighbors(ctx, []Neighbor{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: uint16(r.port)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session", func() bool { st := sp.Status(ctx); return len(st) == 1 && st[0].Up() })
	nh := netip.MustParseAddr("127.0.0.1")
	nh6 := netip.MustParseAddr("fd00::1")
	first := Paths(State{Ready: true, Subnets: []netip.Prefix{sub4, sub6}, NextHop4: nh, NextHop6: nh6})
	if err := sp.Announce(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both subnets in the router's table", func() bool {
		got := r.routes(t)
		return got[sub4] == nh && got[sub6] == nh6 && len(got) == 2
	})
	// The subnet moves: the new one is announced, the old withdrawn.
	moved := netip.MustParsePrefix("10.244.9.0/24")
	if err := sp.Announce(Paths(State{Ready: true, Subnets: []netip.Prefix{moved, sub6}, NextHop4: nh, NextHop6: nh6})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the move", func() bool {
		got := r.routes(t)
		_, old := got[sub4]
		return got[moved] == nh && !old
	})
	st := sp.Status(ctx)
	if st[0].Sent != 2 || st[0].UptimeSeconds < 0 || st[0].ASN != 65000 {
		t.Errorf("status %+v: want 2 prefixes sent to AS 65000", st[0])
	}
	select {
	case c := <-changes:
		if c.Addr != "127.0.0.1" {
			t.Errorf("change %+v", c)
		}
	default:
		t.Error("no session change reported")
	}
	// Stop withdraws everything before the session closes.
	sp.Stop()
	stopped = true
	waitFor(t, "the withdrawal at stop", func() bool { return len(r.routes(t)) == 0 })
}

func TestSpeakerWrongASIsShown(t *testing.T) {
	r := startRouter(t, 65000, 65101)
	sp, err := Start(context.Background(), Config{ASN: 65101, RouterID: netip.MustParseAddr("127.0.0.1"), ConnectRetry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	ctx := context.Background()
	// We expect AS 65999; the router is 65000.
	if err := sp.SetNeighbors(ctx, []Neighbor{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65999, Port: uint16(r.port)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refusal in the status", func() bool {
		st := sp.Status(ctx)
		return len(st) == 1 && !st[0].Up() && strings.Contains(strings.ToLower(st[0].LastError), "as")
	})
	t.Logf("status: %+v", sp.Status(ctx))
}

func TestSpeakerReloadKeepsOtherSessions(t *testing.T) {
	r := startRouter(t, 65000, 65101)
	sp, err := Start(context.Background(), Config{ASN: 65101, RouterID: netip.MustParseAddr("127.0.0.1"), ConnectRetry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	ctx := context.Background()
	good := Neighbor{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: uint16(r.port)}
	down := Neighbor{Addr: netip.MustParseAddr("127.0.0.9"), ASN: 65009, Port: uint16(freePort(t))} // nobody there
	if err := sp.SetNeighbors(ctx, []Neighbor{good}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session", func() bool { st := sp.Status(ctx); return len(st) == 1 && st[0].Up() })
	since := sp.Status(ctx)[0].Since
	// A neighbour added, then removed: the first session is not touched,
	// and a neighbour that does not answer stops nothing.
	if err := sp.SetNeighbors(ctx, []Neighbor{down, good}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	st := sp.Status(ctx)
	i := slices.IndexFunc(st, func(s NeighborStatus) bool { return s.Addr == "127.0.0.1" })
	if len(st) != 2 || i < 0 || !st[i].Up() || !st[i].Since.Equal(since) {
		t.Fatalf("after adding a neighbour: %+v (the first session since %v)", st, since)
	}
	if err := sp.SetNeighbors(ctx, []Neighbor{good}); err != nil {
		t.Fatal(err)
	}
	st = sp.Status(ctx)
	if len(st) != 1 || !st[0].Up() || !st[0].Since.Equal(since) {
		t.Fatalf("after removing a neighbour: %+v", st)
	}
}

// TestSpeakerBackoff: a neighbour that does not answer is retried less
// and less often, and at the first interval again once its session is up.
func TestSpeakerBackoff(t *testing.T) {
	port := freePort(t) // nobody listens yet
	sp, err := Start(context.Background(), Config{ASN: 65101, RouterID: netip.MustParseAddr("127.0.0.1"), ConnectRetry: time.Second, MaxConnectRetry: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop()
	ctx := context.Background()
	addr := netip.MustParseAddr("127.0.0.1")
	if err := sp.SetNeighbors(ctx, []Neighbor{{Addr: addr, ASN: 65000, Port: uint16(port)}}); err != nil {
		t.Fatal(err)
	}
	if got := sp.RetryInterval(addr); got != time.Second {
		t.Fatalf("first retry interval %v, want 1s", got)
	}
	waitFor(t, "the retry interval to double", func() bool { return sp.RetryInterval(addr) == 2*time.Second })
	// The router comes up on that port: the session is established and
	// the interval is the first one again.
	startRouterOn(t, 65000, 65101, port)
	waitFor(t, "the session", func() bool { st := sp.Status(ctx); return len(st) == 1 && st[0].Up() })
	waitFor(t, "the interval reset", func() bool { return sp.RetryInterval(addr) == time.Second })
}
