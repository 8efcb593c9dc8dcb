package kernelvx

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/netlab"
)

// The real-kernel tests: namespaces of a netlab lab (unique names, removed
// by t.Cleanup and by netlab's reaper if the test binary dies), our calls
// made through sockets opened in them (NewSystemAt), checks made with
// ip(8), bridge(8), ping(8) and nft(8) run there.

const testVNI = 7

// khost is one namespace host of the kernel test.
type khost struct {
	h        *netlab.Host
	ns       netns.NsHandle
	underIf  string
	underlay netip.Addr
	side     netip.Addr // a's address on the intruder's link
	subnets  []netip.Prefix
	mac      encap.MAC
	sys      *System
	dev      *Device
}

// peer is how the other hosts see h.
func (h *khost) peer() Peer {
	return Peer{Name: h.h.Name(), Subnets: h.subnets, Underlay: netip.AddrPortFrom(h.underlay, 0), MAC: h.mac}
}

// addr is h's overlay address of the family v6 says.
func (h *khost) addr(v6 bool) netip.Addr { return h.subnet(v6).Addr() }

// subnet is h's subnet of the family v6 says.
func (h *khost) subnet(v6 bool) netip.Prefix {
	for _, s := range h.subnets {
		if s.Addr().Is6() == v6 {
			return s
		}
	}
	return netip.Prefix{}
}

// open makes a new System and Device for h, as a (re)started weft would.
func (h *khost) open(t *testing.T) {
	t.Helper()
	sys, err := NewSystemAt(h.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	under, err := sys.LinkByName(h.underIf)
	if err != nil {
		t.Fatal(err)
	}
	mtu := 1500 - encap.VXLAN.Overhead(h.underlay.Is6())
	dev, err := New(sys, Config{VNI: testVNI, MTU: mtu, Underlay: h.underlay, UnderlayIndex: under.Index, Subnets: h.subnets}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.sys, h.dev, h.mac = sys, dev, dev.Config().MAC
}

func (h *khost) run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.h.Run(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// nft runs nft(8) in h, if it is installed: the filter is checked through
// this package's own reading (System.FilterSets) in any case, and through
// nft(8), independently, where it is there (package nftables).
func (h *khost) nft(t *testing.T, args ...string) string {
	t.Helper()
	if len(netlab.MissingTools("nft")) > 0 {
		t.Log("nft(8) not installed (apt-get install nftables): the filter is not cross-checked with it")
		return ""
	}
	return h.run(t, "nft", args...)
}

// lines returns the non-empty lines of out.
func lines(out string) []string {
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

// programmed returns what ip(8) and bridge(8) show of weft's entries on
// the device: routes with weft's protocol, permanent neighbours, FDB.
func (h *khost) programmed(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range lines(h.run(t, "ip", fam, "route", "show", "proto", "87")) {
			out = append(out, "route "+l)
		}
	}
	for _, l := range lines(h.run(t, "ip", "neigh", "show", "dev", DefaultName, "nud", "permanent")) {
		out = append(out, "neigh "+l)
	}
	for _, l := range lines(h.run(t, "bridge", "fdb", "show", "dev", DefaultName)) {
		out = append(out, "fdb "+l)
	}
	slices.Sort(out)
	return out
}

// wantProgrammed is programmed for a host whose peers are ps.
func wantProgrammed(ps ...*khost) []string {
	var out []string
	for _, p := range ps {
		for _, s := range p.subnets {
			out = append(out, fmt.Sprintf("route %s via %s dev %s onlink", s, s.Addr(), DefaultName))
			out = append(out, fmt.Sprintf("neigh %s lladdr %s PERMANENT", s.Addr(), p.mac))
		}
		out = append(out, fmt.Sprintf("fdb %s dst %s self permanent", p.mac, p.underlay))
	}
	slices.Sort(out)
	return out
}

// normalize drops what ip(8) prints beyond what wantProgrammed says
// (metrics, "proto 87", "pref medium").
func normalize(ls []string) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		f := strings.Fields(l)
		var keep []string
		for i := 0; i < len(f); i++ {
			switch f[i] {
			case "proto", "metric", "pref":
				i++
				continue
			}
			keep = append(keep, f[i])
		}
		out = append(out, strings.Join(keep, " "))
	}
	slices.Sort(out)
	return out
}

// kernelLab builds hosts a and b joined by a veth pair, and an intruder c
// joined to a by another, underlays of the family of v6.
func kernelLab(t *testing.T, v6 bool) (a, b, c *khost) {
	t.Helper()
	netlab.RequireRoot(t)
	netlab.RequireTools(t, "ip", "bridge", "ping")
	lab, err := netlab.New("kvx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	under := func(i int) netip.Prefix {
		if v6 {
			return netip.MustParsePrefix(fmt.Sprintf("fd00:77::%d/64", i))
		}
		return netip.MustParsePrefix(fmt.Sprintf("192.168.77.%d/24", i))
	}
	side := func(i int) netip.Prefix {
		if v6 {
			return netip.MustParsePrefix(fmt.Sprintf("fd00:78::%d/64", i))
		}
		return netip.MustParsePrefix(fmt.Sprintf("192.168.78.%d/24", i))
	}
	hosts := make([]*khost, 3)
	for i, name := range []string{"a", "b", "c"} {
		h, err := lab.Host(name)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := netns.GetFromName(h.NS())
		if err != nil {
			t.Fatalf("open namespace %s: %v", h.NS(), err)
		}
		t.Cleanup(func() { ns.Close() })
		hosts[i] = &khost{h: h, ns: ns, subnets: []netip.Prefix{
			netip.MustParsePrefix(fmt.Sprintf("10.201.%d.0/24", i+1)),
			netip.MustParsePrefix(fmt.Sprintf("fd77:%d::/64", i+1)),
		}}
	}
	a, b, c = hosts[0], hosts[1], hosts[2]
	if a.underIf, b.underIf, err = lab.Link(a.h, b.h, under(1), under(2)); err != nil {
		t.Fatal(err)
	}
	a.underlay, b.underlay = under(1).Addr(), under(2).Addr()
	if c.underIf, _, err = lab.Link(c.h, a.h, side(3), side(1)); err != nil {
		t.Fatal(err)
	}
	c.underlay, a.side = side(3).Addr(), side(1).Addr()
	c.mac = encap.MAC{0x02, 0, 0, 0, 0, 0xcc}
	return a, b, c
}

// vxlanDatagram is a VXLAN datagram to dst's MAC carrying an IP packet
// from src to dstIP (an IPv4 header and an empty ICMP echo, or an IPv6
// header with no next header).
func vxlanDatagram(vni uint32, dst, src encap.MAC, from, to netip.Addr) []byte {
	b := make([]byte, encap.VXLANHeaderLen+encap.EthernetHeaderLen)
	var inner []byte
	if from.Is4() {
		encap.PutVXLAN(b, vni, dst, src, encap.EtherTypeIPv4)
		inner = make([]byte, 28)
		inner[0], inner[8], inner[9] = 0x45, 64, 1
		binary.BigEndian.PutUint16(inner[2:], uint16(len(inner)))
		copy(inner[12:16], from.AsSlice())
		copy(inner[16:20], to.AsSlice())
		inner[20] = 8 // echo request
	} else {
		encap.PutVXLAN(b, vni, dst, src, encap.EtherTypeIPv6)
		inner = make([]byte, 40)
		inner[0], inner[6], inner[7] = 0x60, 59, 64
		copy(inner[8:24], from.AsSlice())
		copy(inner[24:40], to.AsSlice())
	}
	return append(b, inner...)
}

// send sends payload from h to dst:DefaultPort.
func (h *khost) send(t *testing.T, dst netip.Addr, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := fmt.Sprintf("%s %s", netip.AddrPortFrom(dst, DefaultPort), hex.EncodeToString(payload))
	cmd, err := h.h.SelfCommand(ctx, []string{sendEnv + "=" + spec})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("[%s] send to %s: %v: %s", h.h.Name(), dst, err, out)
	}
}

func (h *khost) ping(t *testing.T, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := h.h.Ping(ctx, dst, 3)
	if err != nil {
		t.Fatalf("[%s] ping %s: %v", h.h.Name(), dst, err)
	}
	if res.Received == 0 {
		t.Fatalf("[%s] ping %s over the kernel VXLAN device: %s", h.h.Name(), dst, res)
	}
}

func (h *khost) counters(t *testing.T) FilterCounters {
	t.Helper()
	c, err := h.dev.FilterCounters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKernel(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "ipv4 underlay", true: "ipv6 underlay"}[v6], func(t *testing.T) {
			a, b, c := kernelLab(t, v6)
			for cycle := 1; cycle <= 2; cycle++ {
				t.Logf("cycle %d", cycle)
				kernelCycle(t, a, b, c)
			}
		})
	}
}

// kernelCycle is the life of the two peers' devices from creation to
// Cleanup; run twice, it shows that Cleanup leaves nothing in the way.
func kernelCycle(t *testing.T, a, b, c *khost) {
	for _, h := range []*khost{a, b} {
		h.open(t)
	}
	for range 2 { // the second round changes nothing
		for _, pair := range [][2]*khost{{a, b}, {b, a}} {
			h, other := pair[0], pair[1]
			if err := h.dev.Ensure(); err != nil {
				t.Fatal(err)
			}
			if err := h.dev.Reconcile([]Peer{other.peer()}); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := normalize(a.programmed(t)), wantProgrammed(b); !slices.Equal(got, want) {
			t.Fatalf("a's device holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	beforeA, beforeB := a.counters(t), b.counters(t)
	for _, v6 := range []bool{false, true} {
		a.ping(t, b.addr(v6))
		b.ping(t, a.addr(v6))
	}
	// The pings took the filter's fast rules: nothing dropped, nothing
	// through the slow ones.
	if afterA, afterB := a.counters(t), b.counters(t); afterA != beforeA || afterB != beforeB {
		t.Errorf("the pings changed the filter's counters: a %+v to %+v, b %+v to %+v", beforeA, afterA, beforeB, afterB)
	}
	st, err := a.dev.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.TxPackets < 6 || st.RxPackets < 6 {
		t.Errorf("a's device counters after 6 pings each way: %+v", st)
	}

	// A VXLAN datagram from c, no peer, to a's address on c's link:
	// dropped as unknown_peer, whatever it carries.
	before := a.counters(t)
	c.send(t, a.side, vxlanDatagram(testVNI, a.mac, c.mac, b.addr(false), a.addr(false)))
	after := a.counters(t)
	if got := after.UnknownPeer.Packets - before.UnknownPeer.Packets; got != 1 || after.Spoofed != before.Spoofed {
		t.Errorf("after one datagram from a non-peer: counters %+v, before %+v (want unknown_peer +1)", after, before)
	}
	// From b, the peer, with inner sources outside b's subnets: spoofed.
	before = after
	b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, c.addr(false), a.addr(false)))
	b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, c.addr(true), a.addr(true)))
	after = a.counters(t)
	if got := after.Spoofed.Packets - before.Spoofed.Packets; got != 2 || after.UnknownPeer != before.UnknownPeer {
		t.Errorf("after two spoofed datagrams from a peer: counters %+v, before %+v (want spoofed +2)", after, before)
	}
	// From b's subnet to addresses outside a's subnets: not_local (the
	// kernel would route them on).
	before = after
	b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, b.addr(false), c.addr(false)))
	b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, b.addr(true), c.addr(true)))
	after = a.counters(t)
	if got := after.NotLocal.Packets - before.NotLocal.Packets; got != 2 || after.UnknownPeer != before.UnknownPeer || after.Spoofed != before.Spoofed {
		t.Errorf("after two datagrams to addresses not a's: counters %+v, before %+v (want not_local +2)", after, before)
	}
	// And from b's subnet to a's, from and to the last address of each
	// (the masks must be right), passes the filter, by a fast rule.
	before = after
	for _, v6 := range []bool{false, true} {
		b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, lastAddr(b.subnet(v6)), lastAddr(a.subnet(v6))))
	}
	if after = a.counters(t); after != before {
		t.Errorf("a datagram from the peer's subnet was dropped or took the slow rules: counters %+v, before %+v", after, before)
	}
	// What the fast rules do not take, the slow ones let through and
	// count: a frame that is not IP, and a datagram from a peer whose
	// subnet has another length than ours.
	arp := vxlanDatagram(testVNI, a.mac, b.mac, b.addr(false), a.addr(false))
	binary.BigEndian.PutUint16(arp[encap.VXLANHeaderLen+12:], 0x0806)
	b.send(t, a.underlay, arp)
	if after = a.counters(t); after.SlowPath.Packets != before.SlowPath.Packets+1 || after.UnknownPeer != before.UnknownPeer || after.Spoofed != before.Spoofed || after.NotLocal != before.NotLocal {
		t.Errorf("after a frame that is not IP from the peer: counters %+v, before %+v (want slow_path +1)", after, before)
	}
	wide := b.peer()
	wide.Subnets = []netip.Prefix{netip.PrefixFrom(b.addr(false), 23).Masked(), netip.PrefixFrom(b.addr(true), 60).Masked()}
	if err := a.dev.Reconcile([]Peer{wide}); err != nil {
		t.Fatal(err)
	}
	before = a.counters(t)
	b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, b.addr(false).Next(), a.addr(false)))
	b.send(t, a.underlay, vxlanDatagram(testVNI, a.mac, b.mac, b.addr(true).Next(), a.addr(true)))
	if after = a.counters(t); after.SlowPath.Packets != before.SlowPath.Packets+2 || after.UnknownPeer != before.UnknownPeer || after.Spoofed != before.Spoofed || after.NotLocal != before.NotLocal {
		t.Errorf("after two datagrams from a peer with wider subnets: counters %+v, before %+v (want slow_path +2)", after, before)
	}
	if err := a.dev.Reconcile([]Peer{b.peer()}); err != nil {
		t.Fatal(err)
	}

	// Leftovers of a crash or of a hand: a flood list (the all-zeros MAC
	// with two destinations; a unicast MAC has one), weft's entries for a
	// peer that is gone, and an administrator's route through the device
	// (left alone).
	stale, stale2 := "192.168.77.99", "192.168.77.98"
	if a.underlay.Is6() {
		stale, stale2 = "fd00:77::99", "fd00:77::98"
	}
	for _, cmd := range [][]string{
		{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", DefaultName, "dst", stale, "self", "permanent"},
		{"bridge", "fdb", "append", "00:00:00:00:00:00", "dev", DefaultName, "dst", stale2, "self", "permanent"},
		{"bridge", "fdb", "append", "02:57:0a:c9:09:00", "dev", DefaultName, "dst", stale, "self", "permanent"},
		{"ip", "neigh", "replace", "10.201.9.0", "lladdr", "02:57:0a:c9:09:00", "dev", DefaultName, "nud", "permanent"},
		{"ip", "route", "add", "10.201.9.0/24", "via", "10.201.9.0", "dev", DefaultName, "onlink", "proto", "87"},
		{"ip", "route", "add", "10.201.10.0/24", "via", "10.201.9.0", "dev", DefaultName, "onlink", "proto", "static"},
	} {
		a.run(t, cmd[0], cmd[1:]...)
	}
	if got, want := len(a.programmed(t)), len(wantProgrammed(b))+5; got != want {
		t.Fatalf("with the leftovers a's device holds %d of weft's entries, want %d:\n%s", got, want, strings.Join(a.programmed(t), "\n"))
	}

	// kill -9 and restart: a new process finds the device, the filter and
	// the entries, adopts them, removes the stale ones and adds no
	// duplicates.
	index := a.dev.Index()
	a.open(t)
	if err := a.dev.Ensure(); err != nil {
		t.Fatal(err)
	}
	if a.dev.Index() != index {
		t.Errorf("after a restart the device is #%d, was #%d: recreated, not adopted", a.dev.Index(), index)
	}
	if err := a.dev.Reconcile([]Peer{b.peer()}); err != nil {
		t.Fatal(err)
	}
	if got, want := normalize(a.programmed(t)), wantProgrammed(b); !slices.Equal(got, want) {
		t.Fatalf("after a restart a's device holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out := a.run(t, "ip", "route", "show", "proto", "static"); !strings.Contains(out, "10.201.10.0/24 via 10.201.9.0 dev "+DefaultName) {
		t.Errorf("the administrator's route is gone: %q", out)
	}
	a.ping(t, b.addr(false))
	t.Logf("a's device and filter with b as its peer:\n%s\n%s", strings.Join(a.programmed(t), "\n"), a.nft(t, "list", "table", "inet", FilterTable))

	// No peers: no routes, neighbours, FDB entries or filter elements.
	if err := a.dev.Reconcile(nil); err != nil {
		t.Fatal(err)
	}
	if got := a.programmed(t); len(got) != 0 {
		t.Fatalf("with no peers a's device holds\n%s", strings.Join(got, "\n"))
	}
	if fs, err := a.sys.FilterSets(); err != nil || len(fs.Peers)+len(fs.Sources) != 0 {
		t.Fatalf("with no peers the filter holds %+v (%v)", fs, err)
	}
	if nft := a.nft(t, "list", "table", "inet", FilterTable); strings.Contains(nft, b.underlay.String()) {
		t.Fatalf("with no peers nft still lists b:\n%s", nft)
	}

	// Cleanup from a fresh process, twice.
	for _, h := range []*khost{a, b} {
		sys, err := NewSystemAt(h.ns)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := Cleanup(sys, "", nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := sys.LinkByName(DefaultName); !errors.Is(err, ErrNotExist) {
			t.Errorf("[%s] after Cleanup, link %s: %v", h.h.Name(), DefaultName, err)
		}
		if _, err := sys.FilterSets(); !errors.Is(err, ErrNotExist) {
			t.Errorf("[%s] after Cleanup, the filter: %v", h.h.Name(), err)
		}
		if out := h.nft(t, "list", "tables"); strings.Contains(out, FilterTable) {
			t.Errorf("[%s] after Cleanup nft lists %s", h.h.Name(), out)
		}
		sys.Close()
	}
}

// costEnv runs TestFilterCost, a measurement rather than a check.
const costEnv = "KERNELVX_FILTER_COST"

// TestFilterCost measures what the peer filter costs: iperf3, TCP, one
// stream, a to b over the kernel VXLAN devices, with the filter and
// without, alternated, and logs the medians. Set KERNELVX_FILTER_COST=1
// (and -v) to run it; KERNELVX_FILTER_COST=N runs N rounds (default 3)
// of 5 s each way.
func TestFilterCost(t *testing.T) {
	rounds, err := strconv.Atoi(os.Getenv(costEnv))
	if err != nil || rounds <= 0 {
		t.Skipf("SKIPPED: a measurement, not a check: set %s=1 (or a number of rounds) to run it", costEnv)
	}
	if rounds == 1 {
		rounds = 3
	}
	netlab.RequireTools(t, "iperf3")
	a, b, _ := kernelLab(t, false)
	a.open(t)
	b.open(t)
	program := func() {
		for _, pair := range [][2]*khost{{a, b}, {b, a}} {
			if err := pair[0].dev.Ensure(); err != nil {
				t.Fatal(err)
			}
			if err := pair[0].dev.Reconcile([]Peer{pair[1].peer()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	program()
	if _, err := b.h.IPerf3Server(0); err != nil {
		t.Fatal(err)
	}
	a.ping(t, b.addr(false))
	var with, without []float64
	for i := 0; i < rounds; i++ {
		for _, filtered := range []bool{true, false} {
			if filtered {
				program()
			} else {
				for _, h := range []*khost{a, b} {
					if err := h.sys.FilterDelete(); err != nil {
						t.Fatal(err)
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			res, err := a.h.IPerf3Client(ctx, b.addr(false), netlab.IPerf3Options{Seconds: 5, Streams: 1})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			gbps := res.ReceivedBPS / 1e9
			t.Logf("round %d, filter %v: %.2f Gbit/s, %d retransmits", i+1, filtered, gbps, res.Retransmits)
			if filtered {
				with = append(with, gbps)
			} else {
				without = append(without, gbps)
			}
		}
	}
	mw, mo := median(with), median(without)
	t.Logf("TCP 1 stream over kernel VXLAN, medians of %d × 5 s: with the filter %.2f Gbit/s, without %.2f Gbit/s (%.3f×)",
		rounds, mw, mo, mw/mo)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
