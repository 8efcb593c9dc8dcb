package kernelvx

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/weftnet/weft/encap"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func mac(s string) encap.MAC {
	m, err := encap.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// testConfig is host a: underlay 192.0.2.1 on eth0 (#11), subnets
// 10.99.1.0/24 and fd99:1::/64.
func testConfig() Config {
	return Config{
		VNI:           1,
		MTU:           1450,
		Underlay:      addr("192.0.2.1"),
		UnderlayIndex: 11,
		Subnets:       []netip.Prefix{pfx("10.99.1.0/24"), pfx("fd99:1::/64")},
	}
}

// newTestDevice returns a Fake holding eth0 (#11) and a Device on it, not
// yet ensured.
func newTestDevice(t *testing.T, cfg Config) (*Fake, *Device) {
	t.Helper()
	f := NewFake()
	f.AddLink(Link{Name: "eth0", Kind: "veth", MTU: 1500, Up: true})
	d, err := New(f, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f, d
}

func mustEnsure(t *testing.T, d *Device) {
	t.Helper()
	if err := d.Ensure(); err != nil {
		t.Fatal(err)
	}
}

func checkDump(t *testing.T, f *Fake, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := f.Dump(); !slices.Equal(got, want) {
		t.Errorf("state:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func checkOps(t *testing.T, f *Fake, want ...string) {
	t.Helper()
	if got := f.Ops(); !slices.Equal(got, want) {
		t.Errorf("calls:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// The device's own lines in every dump.
var (
	eth0Line   = "link eth0 #11 veth up"
	deviceLine = "link weft-vx #12 vxlan vni 1 port 8472 local 192.0.2.1 dev #11 mac 02:57:0a:63:01:00 mtu 1450 up"
	addrLines  = []string{"addr weft-vx 10.99.1.0/32", "addr weft-vx fd99:1::/128"}
	filterLine = "filter udp dport 8472 local [10.99.1.0/24 fd99:1::/64]"
)

func base(more ...string) []string {
	return append(append([]string{eth0Line, deviceLine, filterLine}, addrLines...), more...)
}

func TestEnsureCreates(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	checkDump(t, f, base()...)
	checkOps(t, f, "FilterEnsure 8472 [10.99.1.0/24 fd99:1::/64]", "LinkAdd weft-vx", "AddrReplace 10.99.1.0/32", "AddrReplace fd99:1::/128", "LinkSetUp 12")
	if d.Index() != 12 {
		t.Errorf("Index() = %d, want 12", d.Index())
	}
	// Again: the link is adopted, nothing else changes.
	mustEnsure(t, d)
	checkDump(t, f, base()...)
	checkOps(t, f, "FilterEnsure 8472 [10.99.1.0/24 fd99:1::/64]", "LinkSetUp 12")
}

// The membership events, in order, and the exact state after each.
func TestReconcileSequence(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	f.Ops()

	b := Peer{Name: "b", Subnets: []netip.Prefix{pfx("10.99.2.0/24"), pfx("fd99:2::/64")},
		Underlay: netip.MustParseAddrPort("192.0.2.2:0"), MAC: mac("02:57:0a:63:02:00")}
	c := Peer{Name: "c", Subnets: []netip.Prefix{pfx("10.99.3.0/24")},
		Underlay: netip.MustParseAddrPort("192.0.2.3:8472"), MAC: mac("02:57:0a:63:03:00")}
	bMAC, bUnder, cMoved := b, b, c
	bMAC.MAC = mac("02:57:0a:63:02:ff")
	bUnder.MAC, bUnder.Underlay = bMAC.MAC, netip.MustParseAddrPort("192.0.2.22:0")
	cMoved.Subnets = []netip.Prefix{pfx("10.99.4.0/24")}

	bLines := []string{
		"route 10.99.2.0/24 via 10.99.2.0 dev weft-vx onlink proto weft",
		"route fd99:2::/64 via fd99:2:: dev weft-vx onlink proto weft",
		"neigh 10.99.2.0 lladdr 02:57:0a:63:02:00 dev weft-vx permanent",
		"neigh fd99:2:: lladdr 02:57:0a:63:02:00 dev weft-vx permanent",
		"fdb 02:57:0a:63:02:00 dst 192.0.2.2 dev weft-vx self permanent",
		"filter peer 192.0.2.2",
		"filter source 192.0.2.2 . 10.99.2.0/24",
		"filter source 192.0.2.2 . fd99:2::/64",
	}
	cLines := []string{
		"route 10.99.3.0/24 via 10.99.3.0 dev weft-vx onlink proto weft",
		"neigh 10.99.3.0 lladdr 02:57:0a:63:03:00 dev weft-vx permanent",
		"fdb 02:57:0a:63:03:00 dst 192.0.2.3 dev weft-vx self permanent",
		"filter peer 192.0.2.3",
		"filter source 192.0.2.3 . 10.99.3.0/24",
	}
	bMACLines := []string{
		"route 10.99.2.0/24 via 10.99.2.0 dev weft-vx onlink proto weft",
		"route fd99:2::/64 via fd99:2:: dev weft-vx onlink proto weft",
		"neigh 10.99.2.0 lladdr 02:57:0a:63:02:ff dev weft-vx permanent",
		"neigh fd99:2:: lladdr 02:57:0a:63:02:ff dev weft-vx permanent",
		"fdb 02:57:0a:63:02:ff dst 192.0.2.2 dev weft-vx self permanent",
		"filter peer 192.0.2.2",
		"filter source 192.0.2.2 . 10.99.2.0/24",
		"filter source 192.0.2.2 . fd99:2::/64",
	}
	bUnderLines := []string{
		"route 10.99.2.0/24 via 10.99.2.0 dev weft-vx onlink proto weft",
		"route fd99:2::/64 via fd99:2:: dev weft-vx onlink proto weft",
		"neigh 10.99.2.0 lladdr 02:57:0a:63:02:ff dev weft-vx permanent",
		"neigh fd99:2:: lladdr 02:57:0a:63:02:ff dev weft-vx permanent",
		"fdb 02:57:0a:63:02:ff dst 192.0.2.22 dev weft-vx self permanent",
		"filter peer 192.0.2.22",
		"filter source 192.0.2.22 . 10.99.2.0/24",
		"filter source 192.0.2.22 . fd99:2::/64",
	}
	cMovedLines := []string{
		"route 10.99.4.0/24 via 10.99.4.0 dev weft-vx onlink proto weft",
		"neigh 10.99.4.0 lladdr 02:57:0a:63:03:00 dev weft-vx permanent",
		"fdb 02:57:0a:63:03:00 dst 192.0.2.3 dev weft-vx self permanent",
		"filter peer 192.0.2.3",
		"filter source 192.0.2.3 . 10.99.4.0/24",
	}
	cat := func(ls ...[]string) []string { return slices.Concat(ls...) }

	for _, step := range []struct {
		event string
		peers []Peer
		state []string
		ops   []string
	}{
		{
			event: "b joins", peers: []Peer{b}, state: bLines,
			ops: []string{
				"FilterReplace 1 peers 2 sources",
				"NeighSet 10.99.2.0 lladdr 02:57:0a:63:02:00 dev #12 permanent",
				"NeighSet fd99:2:: lladdr 02:57:0a:63:02:00 dev #12 permanent",
				"FDBSet 02:57:0a:63:02:00 dst 192.0.2.2 dev #12 self permanent",
				"RouteReplace 10.99.2.0/24 via 10.99.2.0 dev #12 onlink",
				"RouteReplace fd99:2::/64 via fd99:2:: dev #12 onlink",
			},
		},
		{
			event: "b again: nothing to do", peers: []Peer{b}, state: bLines,
		},
		{
			event: "c joins", peers: []Peer{c, b}, state: cat(bLines, cLines),
			ops: []string{
				"FilterReplace 2 peers 3 sources",
				"NeighSet 10.99.3.0 lladdr 02:57:0a:63:03:00 dev #12 permanent",
				"FDBSet 02:57:0a:63:03:00 dst 192.0.2.3 dev #12 self permanent",
				"RouteReplace 10.99.3.0/24 via 10.99.3.0 dev #12 onlink",
			},
		},
		{
			event: "b's VTEP MAC changes", peers: []Peer{bMAC, c}, state: cat(bMACLines, cLines),
			ops: []string{
				"NeighSet 10.99.2.0 lladdr 02:57:0a:63:02:ff dev #12 permanent",
				"NeighSet fd99:2:: lladdr 02:57:0a:63:02:ff dev #12 permanent",
				"FDBSet 02:57:0a:63:02:ff dst 192.0.2.2 dev #12 self permanent",
				"FDBDel 02:57:0a:63:02:00 dst 192.0.2.2 dev #12 self permanent",
			},
		},
		{
			event: "b's underlay address changes", peers: []Peer{bUnder, c}, state: cat(bUnderLines, cLines),
			ops: []string{
				"FilterReplace 2 peers 3 sources",
				"FDBSet 02:57:0a:63:02:ff dst 192.0.2.22 dev #12 self permanent",
			},
		},
		{
			event: "c's subnet changes", peers: []Peer{bUnder, cMoved}, state: cat(bUnderLines, cMovedLines),
			ops: []string{
				"FilterReplace 2 peers 3 sources",
				"NeighSet 10.99.4.0 lladdr 02:57:0a:63:03:00 dev #12 permanent",
				"RouteReplace 10.99.4.0/24 via 10.99.4.0 dev #12 onlink",
				"RouteDel 10.99.3.0/24 via 10.99.3.0 dev #12 onlink",
				"NeighDel 10.99.3.0 lladdr 02:57:0a:63:03:00 dev #12 permanent",
			},
		},
		{
			event: "b leaves", peers: []Peer{cMoved}, state: cMovedLines,
			ops: []string{
				"FilterReplace 1 peers 1 sources",
				"RouteDel 10.99.2.0/24 via 10.99.2.0 dev #12 onlink",
				"RouteDel fd99:2::/64 via fd99:2:: dev #12 onlink",
				"NeighDel 10.99.2.0 lladdr 02:57:0a:63:02:ff dev #12 permanent",
				"NeighDel fd99:2:: lladdr 02:57:0a:63:02:ff dev #12 permanent",
				"FDBDel 02:57:0a:63:02:ff dst 192.0.2.22 dev #12 self permanent",
			},
		},
		{
			event: "everyone leaves", peers: nil, state: nil,
			ops: []string{
				"FilterReplace 0 peers 0 sources",
				"RouteDel 10.99.4.0/24 via 10.99.4.0 dev #12 onlink",
				"NeighDel 10.99.4.0 lladdr 02:57:0a:63:03:00 dev #12 permanent",
				"FDBDel 02:57:0a:63:03:00 dst 192.0.2.3 dev #12 self permanent",
			},
		},
	} {
		if err := d.Reconcile(step.peers); err != nil {
			t.Fatalf("%s: %v", step.event, err)
		}
		t.Run(step.event, func(t *testing.T) {
			checkDump(t, f, base(step.state...)...)
			checkOps(t, f, step.ops...)
		})
	}
}

// peerB is a valid peer for the error cases to spoil.
func peerB() Peer {
	return Peer{Name: "b", Subnets: []netip.Prefix{pfx("10.99.2.0/24")},
		Underlay: netip.MustParseAddrPort("192.0.2.2:0"), MAC: mac("02:57:0a:63:02:00")}
}

// A peer that cannot be programmed is named in the error and left out;
// the others are programmed. Of two peers that claim the same name, MAC or
// subnet, the first by name (then by order) wins.
func TestReconcileRefusesPeers(t *testing.T) {
	okC := Peer{Name: "c", Subnets: []netip.Prefix{pfx("10.99.3.0/24")},
		Underlay: netip.MustParseAddrPort("192.0.2.3:0"), MAC: mac("02:57:0a:63:03:00")}
	spoil := func(f func(*Peer)) Peer {
		p := peerB()
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		bad  Peer
		want string
	}{
		{"no name", spoil(func(p *Peer) { p.Name = "" }), `peer "" not programmed: no name`},
		{"same name as c", spoil(func(p *Peer) { p.Name = "c" }), `peer "c" not programmed: a second peer of that name`},
		{"no subnet", spoil(func(p *Peer) { p.Subnets = nil }), "no subnet"},
		{"two IPv4 subnets", spoil(func(p *Peer) { p.Subnets = append(p.Subnets, pfx("10.99.9.0/24")) }), "at most one subnet per family"},
		{"host bits", spoil(func(p *Peer) { p.Subnets = []netip.Prefix{pfx("10.99.2.1/24")} }), "10.99.2.1/24 has host bits set (want 10.99.2.0/24)"},
		{"overlaps c", spoil(func(p *Peer) { p.Subnets = []netip.Prefix{pfx("10.99.0.0/16")} }), "subnet 10.99.0.0/16 overlaps 10.99.1.0/24 of this host"},
		{"c's subnet", spoil(func(p *Peer) { p.Name = "d"; p.Subnets = []netip.Prefix{pfx("10.99.3.0/24")} }), `peer "d" not programmed: subnet 10.99.3.0/24 overlaps 10.99.3.0/24 of c`},
		{"no underlay", spoil(func(p *Peer) { p.Underlay = netip.AddrPort{} }), "underlay invalid AddrPort: want a unicast address"},
		{"IPv6 underlay", spoil(func(p *Peer) { p.Underlay = netip.MustParseAddrPort("[2001:db8::2]:0") }), "underlay 2001:db8::2 is not of the family of this host's underlay 192.0.2.1"},
		{"our underlay", spoil(func(p *Peer) { p.Underlay = netip.MustParseAddrPort("192.0.2.1:0") }), "underlay 192.0.2.1 is this host's"},
		{"other port", spoil(func(p *Peer) { p.Underlay = netip.MustParseAddrPort("192.0.2.2:4789") }), "VXLAN port 4789, this host's kernel device uses 8472"},
		{"no MAC", spoil(func(p *Peer) { p.MAC = encap.MAC{} }), "VTEP MAC 00:00:00:00:00:00: want a unicast MAC"},
		{"multicast MAC", spoil(func(p *Peer) { p.MAC = mac("01:00:5e:00:00:01") }), "want a unicast MAC"},
		{"our MAC", spoil(func(p *Peer) { p.MAC = mac("02:57:0a:63:01:00") }), "VTEP MAC 02:57:0a:63:01:00 is this host's too"},
		{"c's MAC", spoil(func(p *Peer) { p.Name, p.MAC = "d", okC.MAC }), `peer "d" not programmed: VTEP MAC 02:57:0a:63:03:00 is c's too`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, d := newTestDevice(t, testConfig())
			mustEnsure(t, d)
			// c comes first, by name or (same name) by order.
			err := d.Reconcile([]Peer{okC, tc.bad})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reconcile: %v, want an error containing %q", err, tc.want)
			}
			checkDump(t, f, base(
				"route 10.99.3.0/24 via 10.99.3.0 dev weft-vx onlink proto weft",
				"neigh 10.99.3.0 lladdr 02:57:0a:63:03:00 dev weft-vx permanent",
				"fdb 02:57:0a:63:03:00 dst 192.0.2.3 dev weft-vx self permanent",
				"filter peer 192.0.2.3",
				"filter source 192.0.2.3 . 10.99.3.0/24",
			)...)
		})
	}
}

func TestNewRefusesConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"long name", func(c *Config) { c.Name = "weft-vxlan-device" }, `kernelvx: name "weft-vxlan-device": want an interface name of at most 15 characters`},
		{"slash in name", func(c *Config) { c.Name = "weft/vx" }, `name "weft/vx"`},
		{"no VNI", func(c *Config) { c.VNI = 0 }, "kernelvx: vni 0: want 1-16777215"},
		{"VNI too big", func(c *Config) { c.VNI = 1 << 24 }, "kernelvx: vni 16777216: want 1-16777215"},
		{"no MTU", func(c *Config) { c.MTU = 0 }, "kernelvx: mtu 0: want 68-65535"},
		{"no underlay", func(c *Config) { c.Underlay = netip.Addr{} }, "kernelvx: underlay invalid IP: want the host's unicast underlay address"},
		{"unspecified underlay", func(c *Config) { c.Underlay = addr("0.0.0.0") }, "kernelvx: underlay 0.0.0.0"},
		{"no underlay index", func(c *Config) { c.UnderlayIndex = 0 }, "kernelvx: underlay index 0"},
		{"no subnet", func(c *Config) { c.Subnets = nil }, "kernelvx: subnets []: want the host's subnet"},
		{"two IPv6 subnets", func(c *Config) { c.Subnets = append(c.Subnets, pfx("fd99:9::/64")) }, "at most one subnet per family"},
		{"multicast MAC", func(c *Config) { c.MAC = mac("03:00:00:00:00:01") }, "kernelvx: mac 03:00:00:00:00:01: want a unicast MAC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.edit(&cfg)
			_, err := New(NewFake(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg := testConfig()
	cfg.Subnets = []netip.Prefix{pfx("fd99:1::/64")} // an IPv6-only host
	d, err := New(NewFake(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := d.Config()
	if got.Name != DefaultName || got.Port != DefaultPort {
		t.Errorf("name %q port %d, want %q %d", got.Name, got.Port, DefaultName, DefaultPort)
	}
	// The MAC weft's userspace VXLAN uses: encap.VTEPMAC of the subnet.
	if want := encap.VTEPMAC(pfx("fd99:1::/64")); got.MAC != want {
		t.Errorf("MAC %s, want %s", got.MAC, want)
	}
	cfg.MAC = mac("02:00:00:00:00:42")
	if d, _ = New(NewFake(), cfg, nil); d.Config().MAC != cfg.MAC {
		t.Errorf("configured MAC %s became %s", cfg.MAC, d.Config().MAC)
	}
}

// A new process (kill -9, restart) adopts the device and its entries:
// Ensure rebuilds only the filter (keeping its peers), and Reconcile with
// the same peers changes nothing.
func TestRestartAdopts(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	before := f.Dump()
	f.Ops()

	d2, err := New(f, testConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, d2)
	if err := d2.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, before...)
	checkOps(t, f, "FilterEnsure 8472 [10.99.1.0/24 fd99:1::/64]", "LinkSetUp 12")
}

// Leftovers of a run with another configuration: the device is recreated
// (its entries go with it) and programmed anew; a stale address goes.
func TestRestartRecreates(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	f.Ops()

	for _, tc := range []struct {
		name string
		edit func(*Config)
		link string
	}{
		{"VNI", func(c *Config) { c.VNI = 2 }, "link weft-vx #13 vxlan vni 2 port 8472 local 192.0.2.1 dev #11 mac 02:57:0a:63:01:00 mtu 1450 up"},
		{"MTU", func(c *Config) { c.VNI, c.MTU = 2, 1400 }, "link weft-vx #14 vxlan vni 2 port 8472 local 192.0.2.1 dev #11 mac 02:57:0a:63:01:00 mtu 1400 up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.edit(&cfg)
			d2, err := New(f, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			mustEnsure(t, d2)
			checkDump(t, f, eth0Line, tc.link, filterLine, "addr weft-vx 10.99.1.0/32", "addr weft-vx fd99:1::/128",
				"filter peer 192.0.2.2", "filter source 192.0.2.2 . 10.99.2.0/24")
			if err := d2.Reconcile([]Peer{peerB()}); err != nil {
				t.Fatal(err)
			}
			f.Ops()
		})
	}

	// Our subnet moved (a lost conflict): the old address goes.
	cfg := testConfig()
	cfg.VNI, cfg.MTU = 2, 1400
	cfg.Subnets = []netip.Prefix{pfx("10.99.7.0/24")}
	cfg.MAC = mac("02:57:0a:63:01:00") // configured, so the link stays
	d3, err := New(f, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, d3)
	checkOps(t, f, "FilterEnsure 8472 [10.99.7.0/24]", "AddrReplace 10.99.7.0/32", "AddrDel 10.99.1.0/32", "AddrDel fd99:1::/128", "LinkSetUp 14")
}

// Entries on the device that no peer accounts for: weft's (permanent
// neighbour and FDB entries, routes with weft's protocol) are removed;
// an administrator's route (another protocol) and the kernel's learned
// neighbour entries are left alone.
func TestReconcileStaleAndForeign(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	idx := d.Index()
	f.AddForeignRoute(Route{Dst: pfx("172.16.0.0/16"), Via: addr("10.99.2.0"), LinkIndex: idx}, "static")
	f.AddLearnedNeigh(Neigh{IP: addr("10.99.8.8"), MAC: mac("02:00:00:00:08:08"), LinkIndex: idx}, "stale")
	for _, err := range []error{
		f.RouteReplace(Route{Dst: pfx("10.99.9.0/24"), Via: addr("10.99.9.0"), LinkIndex: idx}),
		f.NeighSet(Neigh{IP: addr("10.99.9.0"), MAC: mac("02:57:0a:63:09:00"), LinkIndex: idx}),
		f.FDBSet(FDB{MAC: mac("02:57:0a:63:09:00"), Dst: addr("192.0.2.9"), LinkIndex: idx}),
		f.FDBSet(FDB{MAC: encap.MAC{}, Dst: addr("192.0.2.99"), LinkIndex: idx}), // a default destination
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	f.Ops()
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, base(
		"route 172.16.0.0/16 via 10.99.2.0 dev weft-vx onlink proto static",
		"neigh 10.99.8.8 lladdr 02:00:00:00:08:08 dev weft-vx stale",
		"route 10.99.2.0/24 via 10.99.2.0 dev weft-vx onlink proto weft",
		"neigh 10.99.2.0 lladdr 02:57:0a:63:02:00 dev weft-vx permanent",
		"fdb 02:57:0a:63:02:00 dst 192.0.2.2 dev weft-vx self permanent",
		"filter peer 192.0.2.2",
		"filter source 192.0.2.2 . 10.99.2.0/24",
	)...)
}

// A route to a peer's subnet that an administrator put through the device
// becomes weft's (replaced, with weft's protocol): routes are keyed by
// destination.
func TestReconcileTakesOverRouteToPeer(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	f.AddForeignRoute(Route{Dst: pfx("10.99.2.0/24"), Via: addr("10.99.2.1"), LinkIndex: d.Index()}, "static")
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	if dump := strings.Join(f.Dump(), "\n"); !strings.Contains(dump, "route 10.99.2.0/24 via 10.99.2.0 dev weft-vx onlink proto weft") ||
		strings.Contains(dump, "proto static") {
		t.Errorf("state:\n%s", dump)
	}
}

func TestEnsureFailureCleansUp(t *testing.T) {
	inUse := fmt.Errorf("set link up: %w", syscall.EADDRINUSE)
	for _, tc := range []struct {
		name    string
		failOn  string
		fail    error // default inUse
		seed    func(f *Fake)
		want    string
		state   []string
		noVXLAN bool // the error is ErrNoVXLAN
	}{
		{
			name: "port taken, new link and filter", failOn: "LinkSetUp",
			want:  "kernelvx: set weft-vx up: UDP port 8472 is taken (by weft's userspace data path, or another VXLAN device?)",
			state: []string{eth0Line},
		},
		{
			name: "address refused", failOn: "AddrReplace",
			want:  "kernelvx: add address 10.99.1.0/32 to weft-vx",
			state: []string{eth0Line},
		},
		{
			name: "link refused", failOn: "LinkAdd",
			want:  "kernelvx: create VXLAN link weft-vx (vni 1, port 8472, local 192.0.2.1, dev #11)",
			state: []string{eth0Line},
		},
		{
			name: "no vxlan module", failOn: "LinkAdd", fail: fmt.Errorf("link add: %w", syscall.EOPNOTSUPP),
			want:  "kernelvx: create VXLAN link weft-vx (vni 1, port 8472, local 192.0.2.1, dev #11): the kernel has no VXLAN support (module vxlan)",
			state: []string{eth0Line}, noVXLAN: true,
		},
		{
			name: "another link of that name", seed: func(f *Fake) { f.AddLink(Link{Name: DefaultName, Kind: "dummy"}) },
			want:  "kernelvx: link weft-vx exists and is a dummy device, not weft's VXLAN device",
			state: []string{eth0Line, "link weft-vx #12 dummy down"},
		},
		{
			name: "adopted link and filter are kept", failOn: "LinkSetUp",
			seed: func(f *Fake) {
				_, d := newTestDeviceOn(f)
				if err := d.Ensure(); err != nil {
					panic(err)
				}
			},
			want:  "UDP port 8472 is taken",
			state: base(),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake()
			f.AddLink(Link{Name: "eth0", Kind: "veth", MTU: 1500, Up: true})
			if tc.seed != nil {
				tc.seed(f)
			}
			if tc.failOn != "" {
				f.FailOn(tc.failOn, cmp.Or(tc.fail, inUse))
			}
			_, d := newTestDeviceOn(f)
			err := d.Ensure()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ensure: %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrNoVXLAN) != tc.noVXLAN {
				t.Errorf("errors.Is(%v, ErrNoVXLAN) = %v", err, !tc.noVXLAN)
			}
			f.FailOn(tc.failOn, nil)
			checkDump(t, f, tc.state...)
		})
	}
}

func newTestDeviceOn(f *Fake) (*Fake, *Device) {
	d, err := New(f, testConfig(), nil)
	if err != nil {
		panic(err)
	}
	return f, d
}

func TestCleanup(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	// From a fresh process: only the name is needed; twice is fine.
	for range 2 {
		if err := Cleanup(f, "", nil); err != nil {
			t.Fatal(err)
		}
		checkDump(t, f, eth0Line)
	}
	// A link of that name of another type is left alone.
	f.AddLink(Link{Name: DefaultName, Kind: "dummy"})
	err := Cleanup(f, DefaultName, nil)
	if err == nil || !strings.Contains(err.Error(), "link weft-vx is a dummy device, not weft's VXLAN device: left alone") {
		t.Fatalf("Cleanup: %v", err)
	}
	checkDump(t, f, eth0Line, "link weft-vx #13 dummy down")

	// Device.Cleanup, after which Reconcile needs Ensure again.
	f, d = newTestDevice(t, testConfig())
	mustEnsure(t, d)
	if err := d.Cleanup(); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, eth0Line)
	if err := d.Reconcile(nil); err == nil {
		t.Error("Reconcile after Cleanup: no error")
	}
}

// The filter deleted behind weft's back is rebuilt by the next Reconcile.
func TestReconcileRebuildsFilter(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	want := f.Dump()
	if err := f.FilterDelete(); err != nil {
		t.Fatal(err)
	}
	f.Ops()
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	checkDump(t, f, want...)
	checkOps(t, f, "FilterEnsure 8472 [10.99.1.0/24 fd99:1::/64]", "FilterReplace 1 peers 1 sources")
}

// Operations that fail are reported together, and the next Reconcile
// finishes the job.
func TestReconcileRetries(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	f.FailOn("FDBSet", errors.New("no buffer space"))
	err := d.Reconcile([]Peer{peerB()})
	if err == nil || !strings.Contains(err.Error(), "kernelvx: set FDB entry 02:57:0a:63:02:00 dst 192.0.2.2 dev #12 self permanent: no buffer space") {
		t.Fatalf("Reconcile: %v", err)
	}
	f.FailOn("FDBSet", nil)
	f.Ops()
	if err := d.Reconcile([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	checkOps(t, f, "FDBSet 02:57:0a:63:02:00 dst 192.0.2.2 dev #12 self permanent")
}

func TestCountersAndStats(t *testing.T) {
	f, d := newTestDevice(t, testConfig())
	if _, err := d.Stats(); err == nil {
		t.Error("Stats before Ensure: no error")
	}
	mustEnsure(t, d)
	f.SetStats(d.Index(), Stats{RxPackets: 1, RxBytes: 100, TxPackets: 2, TxBytes: 200})
	st, err := d.Stats()
	if err != nil || st != (Stats{RxPackets: 1, RxBytes: 100, TxPackets: 2, TxBytes: 200}) {
		t.Errorf("Stats() = %+v, %v", st, err)
	}
	f.CountDrops(FilterCounters{UnknownPeer: Counter{3, 300}, Spoofed: Counter{1, 90}, NotLocal: Counter{5, 500}})
	// Ensure rebuilds the filter (its counters restart from zero); the
	// Device's counts go on.
	mustEnsure(t, d)
	f.CountDrops(FilterCounters{UnknownPeer: Counter{1, 100}})
	got, err := d.FilterCounters()
	if want := (FilterCounters{UnknownPeer: Counter{4, 400}, Spoofed: Counter{1, 90}, NotLocal: Counter{5, 500}}); err != nil || got != want {
		t.Errorf("FilterCounters() = %+v, %v; want %+v", got, err, want)
	}
}

// Reconcile, Stats and FilterCounters from several goroutines (run with
// -race).
func TestConcurrentUse(t *testing.T) {
	_, d := newTestDevice(t, testConfig())
	mustEnsure(t, d)
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := range 10 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			p := peerB()
			p.Subnets = []netip.Prefix{pfx(fmt.Sprintf("10.99.%d.0/24", 100+i))}
			errs <- d.Reconcile([]Peer{p})
		}()
		go func() {
			defer wg.Done()
			_, err := d.Stats()
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := d.FilterCounters()
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestFilterSetsEqual(t *testing.T) {
	a := FilterSets{
		Peers:   []netip.Addr{addr("192.0.2.3"), addr("192.0.2.2"), addr("192.0.2.2")},
		Sources: []Source{{addr("192.0.2.3"), pfx("10.99.3.0/24")}, {addr("192.0.2.2"), pfx("10.99.2.0/24")}},
	}
	b := FilterSets{
		Peers:   []netip.Addr{addr("192.0.2.2"), addr("192.0.2.3")},
		Sources: []Source{{addr("192.0.2.2"), pfx("10.99.2.0/24")}, {addr("192.0.2.3"), pfx("10.99.3.0/24")}},
	}
	if !a.Equal(b) {
		t.Error("same elements in another order and with a duplicate: not Equal")
	}
	b.Sources[1].Prefix = pfx("10.99.3.0/25")
	if a.Equal(b) {
		t.Error("another prefix length: Equal")
	}
}
