package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/tun"
)

// fakeVXLAN is the kernel data path's kernel in memory: kernelvx.Fake,
// and a probe that passes where the real kernel would let it through
// (the device up, the filter accepting the sender and its inner source).
type fakeVXLAN struct {
	*kernelvx.Fake
	mu       sync.Mutex
	probes   []VXLANProbe
	probeErr error // if set, every probe fails with it
	closed   int
}

func newFakeVXLAN() *fakeVXLAN { return &fakeVXLAN{Fake: kernelvx.NewFake()} }

func (f *fakeVXLAN) ProbeVXLAN(p VXLANProbe, _ time.Duration) error {
	f.mu.Lock()
	f.probes = append(f.probes, p)
	perr := f.probeErr
	f.mu.Unlock()
	if perr != nil {
		return perr
	}
	dump := f.Dump()
	up := slices.ContainsFunc(dump, func(l string) bool { return strings.HasPrefix(l, "link ") && strings.HasSuffix(l, " up") })
	src := netip.PrefixFrom(p.InnerSrc, 24).Masked() // the tests' subnets are /24s
	if !up || !slices.Contains(dump, "filter peer "+p.From.Addr().String()) || !slices.Contains(dump, fmt.Sprintf("filter source %s . %s", p.From.Addr(), src)) {
		return fmt.Errorf("fake kernel: probe %+v dropped", p)
	}
	return nil
}

func (f *fakeVXLAN) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
	return nil
}

func (f *fakeVXLAN) lastProbe() (VXLANProbe, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.probes) == 0 {
		return VXLANProbe{}, 0
	}
	return f.probes[len(f.probes)-1], len(f.probes)
}

// kernelHost makes h a --encap vxlan host in mode, its kernel vx.
func kernelHost(h *host, mode DatapathMode, vx *fakeVXLAN) *host {
	h.s.Encap, h.s.Port, h.s.Datapath, h.s.VXLANDevice = encap.VXLAN, 8472, mode, kernelvx.DefaultName
	prev := h.mod
	h.mod = func(d *Deps) {
		if prev != nil {
			prev(d)
		}
		d.VXLAN = func() (VXLANKernel, error) { return vx, nil }
	}
	return h
}

// state is the fake kernel's state but for the link line (its index
// changes with every creation): what weft programmed.
func state(vx *fakeVXLAN) []string {
	return slices.DeleteFunc(vx.Dump(), func(l string) bool { return strings.HasPrefix(l, "link ") })
}

// linkLine is the fake kernel's (one) link line.
func linkLine(vx *fakeVXLAN) string {
	for _, l := range vx.Dump() {
		if strings.HasPrefix(l, "link ") {
			return l
		}
	}
	return "(no link)"
}

// peerLines are the lines a peer adds to the state: route, neighbour,
// FDB entry and filter elements.
func peerLines(subnet, mac, underlay string) []string {
	gw := strings.TrimSuffix(subnet, "/24")
	return []string{
		fmt.Sprintf("route %s via %s dev weft-vx onlink proto weft", subnet, gw),
		fmt.Sprintf("neigh %s lladdr %s dev weft-vx permanent", gw, mac),
		fmt.Sprintf("fdb %s dst %s dev weft-vx self permanent", mac, underlay),
		"filter peer " + underlay,
		fmt.Sprintf("filter source %s . %s", underlay, subnet),
	}
}

func wantState(own string, peers ...[]string) []string {
	out := []string{"addr weft-vx " + strings.TrimSuffix(own, "/24") + "/32", "filter udp dport 8472 local [" + own + "]"}
	for _, p := range peers {
		out = append(out, p...)
	}
	slices.Sort(out)
	return out
}

func stateIs(vx *fakeVXLAN, want []string) func() error {
	return func() error {
		if got := state(vx); !slices.Equal(got, want) {
			return fmt.Errorf("kernel state\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		return nil
	}
}

var (
	peerB = peerLines("10.244.2.0/24", "02:57:0a:f4:02:00", "127.0.0.2")
	peerC = peerLines("10.244.3.0/24", "02:57:0a:f4:03:00", "127.0.0.3")
)

// A kernel-mode host programs its kernel with exactly the peers the router
// routes through the tunnel, kernel-mode and userspace ones alike: added as
// they join, left out when refused (a subnet conflict, a static peer on a
// port of its own), removed when they leave, and everything is gone once
// it stops.
func TestKernelDatapathFollowsMembership(t *testing.T) {
	u := fakes.NewHub()
	vxA, vxC := newFakeVXLAN(), newFakeVXLAN()
	a := kernelHost(newHost(t, u, "a", 1, "10.244.1.0/24"), DatapathKernel, vxA)
	b := newHost(t, u, "b", 2, "10.244.2.0/24") // userspace, VXLAN
	b.s.Encap, b.s.Port = encap.VXLAN, 8472
	c := kernelHost(newHost(t, u, "c", 3, "10.244.3.0/24"), DatapathAuto, vxC)
	a.mustStart()

	if err := stateIs(vxA, wantState("10.244.1.0/24"))(); err != nil {
		t.Fatalf("a alone: %v", err)
	}
	if link := linkLine(vxA); !strings.HasSuffix(link, " vxlan vni 1 port 8472 local 127.0.0.1 dev #2 mac 02:57:0a:f4:01:00 mtu 1450 up") {
		t.Errorf("a's device: %s", link)
	}
	st := a.n.Status()
	if st.Node.Datapath != "kernel" || st.Node.DatapathReason != "--datapath kernel" || st.Kernel == nil || st.Kernel.Device != "weft-vx" {
		t.Fatalf("a's status: datapath %q (%q), kernel %+v", st.Node.Datapath, st.Node.DatapathReason, st.Kernel)
	}

	b.mustStart(a)
	c.mustStart(a)
	eventually(t, "a programs b and c", stateIs(vxA, wantState("10.244.1.0/24", peerB, peerC)))
	eventually(t, "c (auto: kernel) programs a and b", stateIs(vxC, wantState("10.244.3.0/24", peerB, peerLines("10.244.1.0/24", "02:57:0a:f4:01:00", "127.0.0.1"))))
	if st := c.n.Status(); st.Node.Datapath != "kernel" || !strings.Contains(st.Node.DatapathReason, "--datapath auto: plaintext VXLAN") {
		t.Errorf("c's status: %q %q", st.Node.Datapath, st.Node.DatapathReason)
	}
	eventually(t, "b routes a and c", func() error {
		for _, p := range []string{"a", "c"} {
			if err := routedVia(b, p, router.ViaTunnel)(); err != nil {
				return err
			}
		}
		return nil
	})
	st = a.n.Status()
	if want := []string{"10.244.2.0/24 via 10.244.2.0 dev weft-vx onlink", "10.244.3.0/24 via 10.244.3.0 dev weft-vx onlink"}; !slices.Equal(st.Kernel.Routes, want) ||
		!slices.Equal(st.Kernel.FilterPeers, []string{"127.0.0.2", "127.0.0.3"}) || len(st.Kernel.FDB) != 2 || len(st.Kernel.Neighbors) != 2 || st.Kernel.Error != "" {
		t.Errorf("a's kernel status: %+v", st.Kernel)
	}
	if p := st.Peer("b"); p == nil || p.Via != router.ViaTunnel {
		t.Errorf("a's status of b: %+v", p)
	}

	// d claims b's subnet: refused (b is the incumbent), not programmed.
	d := newHost(t, u, "d", 4, "10.244.2.0/24")
	d.s.Encap, d.s.Port = encap.VXLAN, 8472
	d.mustStart(a)
	eventually(t, "a refuses d", func() error {
		p := a.n.Status().Peer("d")
		if p == nil || p.Refused != "subnet_conflict" {
			return fmt.Errorf("a sees d as %+v", p)
		}
		return nil
	})
	if err := stateIs(vxA, wantState("10.244.1.0/24", peerB, peerC))(); err != nil {
		t.Errorf("after d's conflict: %v", err)
	}
	// d stops once it knows a, so that its leave reaches a: a member
	// stopped before it learnt of anyone leaves silently, stays suspect
	// for up to 15 s and, once b leaves, holds b's subnet meanwhile.
	eventually(t, "d sees a", func() error {
		if p := d.n.Status().Peer("a"); p == nil || p.State != "alive" {
			return fmt.Errorf("d sees a as %+v", p)
		}
		return nil
	})
	d.stop()

	// Static peers: k (a kernel VTEP) is programmed; j, on a port of its
	// own, is refused (one kernel device sends to one port).
	next := a.s
	next.Live.Peers = []StaticPeer{
		{Name: "k", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}, IP: netip.MustParseAddr("127.0.0.9"), MAC: encap.MAC{2, 0, 0, 0, 0, 9}, Port: 8472},
		{Name: "j", Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.8.0/24")}, IP: netip.MustParseAddr("127.0.0.8"), MAC: encap.MAC{2, 0, 0, 0, 0, 8}, Port: 4789},
	}
	if _, err := a.n.Reload(next); err != nil {
		t.Fatal(err)
	}
	peerK := peerLines("10.244.9.0/24", "02:00:00:00:00:09", "127.0.0.9")
	eventually(t, "a programs static k, not j", stateIs(vxA, wantState("10.244.1.0/24", peerB, peerC, peerK)))
	if p := a.n.Status().Peer("j"); p == nil || p.Refused != "encap" || p.Via != router.ViaNone ||
		!strings.Contains(p.Reason, "VXLAN port 4789, but the kernel's VXLAN device sends to one port, ours (8472)") {
		t.Errorf("a's status of j: %+v", p)
	}

	// c leaves: its entries go; b stops: its entries go.
	c.stop()
	eventually(t, "a removes c", stateIs(vxA, wantState("10.244.1.0/24", peerB, peerK)))
	b.stop()
	eventually(t, "a removes b", stateIs(vxA, wantState("10.244.1.0/24", peerK)))
	if got := vxC.Dump(); len(got) != 0 {
		t.Errorf("c stopped, its kernel still holds %q", got)
	}
	a.stop()
	if got := vxA.Dump(); len(got) != 0 {
		t.Errorf("a stopped, its kernel still holds %q", got)
	}
	if vxA.closed != 1 {
		t.Errorf("a's kernel closed %d times, want once", vxA.closed)
	}
}

// screenPeers refuses what one kernel device cannot carry, and leaves the
// rest (and peers that are not routable anyway) as they are; macClashes
// refuses, of the routed peers, a second holder of a VTEP MAC.
func TestScreenPeers(t *testing.T) {
	cfg := kernelvx.Config{Port: 8472, Underlay: netip.MustParseAddr("192.0.2.1"), MAC: encap.MAC{2, 0x57, 10, 244, 1, 0}}
	peer := func(name, under string, mac byte) router.Peer {
		return router.Peer{Name: name, Subnets: []netip.Prefix{netip.MustParsePrefix("10.244.9.0/24")}, Underlay: netip.MustParseAddrPort(under),
			MAC: encap.MAC{2, 0, 0, 0, 0, mac}, State: "alive"}
	}
	dead := peer("dead", "192.0.2.8:9999", 8)
	dead.State = "dead"
	zero := peer("zero", "192.0.2.9:8472", 9)
	zero.MAC = encap.MAC{}
	for _, tc := range []struct {
		p       router.Peer
		refused router.Refusal
		reason  string
	}{
		{peer("fine", "192.0.2.2:8472", 2), router.RefusedNone, ""},
		{peer("anyport", "192.0.2.3:0", 3), router.RefusedNone, ""},
		{peer("port", "192.0.2.4:4789", 4), router.RefusedEncap, "VXLAN port 4789"},
		{peer("v6", "[2001:db8::5]:8472", 5), router.RefusedEncap, "not of our underlay's family"},
		{peer("self", "192.0.2.1:8472", 6), router.RefusedUnderlay, "our own underlay address 192.0.2.1"},
		{zero, router.RefusedInvalidMeta, "not a unicast MAC"},
		{dead, router.RefusedNone, ""},
	} {
		t.Run(tc.p.Name, func(t *testing.T) {
			in := []router.Peer{tc.p}
			got := screenPeers(in, cfg)[0]
			if got.Refused != tc.refused || !strings.Contains(got.Incompatible, tc.reason) || (tc.reason != "" && !strings.HasPrefix(got.Incompatible, "kernel data path: ")) {
				t.Errorf("refused %q %q, want %q containing %q", got.Refused, got.Incompatible, tc.refused, tc.reason)
			}
			if in[0].Incompatible != "" {
				t.Error("screenPeers changed its input")
			}
		})
	}

	ours := peer("ours", "192.0.2.7:8472", 0)
	ours.MAC = cfg.MAC
	peers := []router.Peer{peer("b", "192.0.2.2:8472", 2), peer("a", "192.0.2.3:8472", 2), ours, peer("c", "192.0.2.4:8472", 4), peer("d", "192.0.2.5:8472", 4)}
	routed := map[string]bool{"a": true, "b": true, "ours": true, "c": true} // d is not routed: it clashes with nobody
	if !macClashes(peers, routed, cfg.MAC) {
		t.Fatal("macClashes found no clash")
	}
	want := map[string]string{"b": `VTEP MAC 02:00:00:00:00:02 is also "a"'s`, "ours": "VTEP MAC 02:57:0a:f4:01:00 is also this host's"}
	for _, p := range peers {
		if w := want[p.Name]; (w == "") != (p.Incompatible == "") || !strings.Contains(p.Incompatible, w) || (w != "" && p.Refused != router.RefusedEncap) {
			t.Errorf("%s: refused %q %q, want %q", p.Name, p.Refused, p.Incompatible, w)
		}
	}
	if macClashes([]router.Peer{peer("a", "192.0.2.3:8472", 2)}, map[string]bool{"a": true}, cfg.MAC) {
		t.Error("a clash with one peer")
	}
}

// --datapath auto takes the kernel where the configuration and the kernel
// allow it, and the userspace path otherwise, saying why; --datapath
// kernel fails where the kernel cannot. A userspace start removes what a
// kernel-mode run left.
func TestDatapathChoice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     DatapathMode
		encap    encap.Kind
		noVXLAN  bool // the kernel cannot create a VXLAN device
		leftover bool // a kernel-mode run's device and filter are there
		want     string
		reason   string
		startErr string
	}{
		{name: "userspace default", mode: DatapathUserspace, encap: encap.VXLAN, leftover: true, want: "userspace", reason: "--datapath userspace (the default)"},
		{name: "auto udp", mode: DatapathAuto, encap: encap.UDP, leftover: true, want: "userspace", reason: "--datapath auto: --encap udp: the kernel data path is the kernel's VXLAN device"},
		{name: "auto vxlan", mode: DatapathAuto, encap: encap.VXLAN, want: "kernel", reason: "--datapath auto: plaintext VXLAN, and the kernel has a VXLAN device"},
		{name: "auto adopts", mode: DatapathAuto, encap: encap.VXLAN, leftover: true, want: "kernel", reason: "--datapath auto: plaintext VXLAN"},
		{name: "auto without the module", mode: DatapathAuto, encap: encap.VXLAN, noVXLAN: true, want: "userspace", reason: "--datapath auto: the kernel data path is unavailable: kernelvx: create VXLAN link weft-vx"},
		{name: "kernel without the module", mode: DatapathKernel, encap: encap.VXLAN, noVXLAN: true, startErr: "the kernel has no VXLAN support (module vxlan)"},
		{name: "kernel with udp", mode: DatapathKernel, encap: encap.UDP, startErr: "--datapath kernel with --encap udp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := fakes.NewHub()
			vx := newFakeVXLAN()
			h := kernelHost(newHost(t, u, "a", 1, "10.244.1.0/24"), tc.mode, vx)
			h.s.Encap, h.s.Port = tc.encap, tc.encap.DefaultPort()
			if tc.leftover {
				idx := vx.AddLink(kernelvx.Link{Name: "weft-vx", Kind: kernelvx.KindVXLAN, VNI: 1, Port: 8472, Local: netip.MustParseAddr("127.0.0.1"),
					UnderlayIndex: 2, MAC: encap.MAC{2, 0x57, 10, 244, 1, 0}, MTU: 1450, Up: true})
				if err := vx.FilterEnsure(8472, []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}); err != nil {
					t.Fatal(err)
				}
				if err := vx.RouteReplace(kernelvx.Route{Dst: netip.MustParsePrefix("10.244.7.0/24"), Via: netip.MustParseAddr("10.244.7.0"), LinkIndex: idx}); err != nil {
					t.Fatal(err)
				}
				h.kernel.SetStale([]tun.Route{{Dst: netip.MustParsePrefix("10.244.7.0/24"), LinkIndex: idx}, {Dst: netip.MustParsePrefix("10.244.77.0/24")}})
			}
			if tc.noVXLAN {
				vx.FailOn("LinkAdd", syscall.EOPNOTSUPP)
			}
			err := h.start()
			if tc.startErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.startErr) {
					t.Fatalf("start: %v, want an error containing %q", err, tc.startErr)
				}
				if got := vx.Dump(); len(got) != 0 {
					t.Errorf("a failed start left %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := h.n.Status()
			if st.Node.Datapath != tc.want || !strings.Contains(st.Node.DatapathReason, tc.reason) || (st.Kernel != nil) != (tc.want == "kernel") {
				t.Errorf("status: datapath %q reason %q kernel %+v; want %q, %q", st.Node.Datapath, st.Node.DatapathReason, st.Kernel, tc.want, tc.reason)
			}
			if got := gauge(t, h, "weft_datapath", tc.want); got != 1 {
				t.Errorf("weft_datapath{mode=%q} = %v", tc.want, got)
			}
			ev := h.ev.List()
			removedOurs := slices.Contains(ev, "route del 10.244.7.0/24")
			switch tc.want {
			case "userspace":
				if got := vx.Dump(); len(got) != 0 {
					t.Errorf("userspace path: the kernel still holds %q", got)
				}
			case "kernel":
				if tc.leftover && removedOurs {
					t.Errorf("kernel path: the route through the device it adopts was removed as stale: %q", ev)
				}
				if link := linkLine(vx); !strings.HasSuffix(link, " up") {
					t.Errorf("kernel path: device %s", link)
				}
			}
			if tc.leftover && !slices.Contains(ev, "route del 10.244.77.0/24") {
				t.Errorf("the stale route of another link was not removed: %q", ev)
			}
		})
	}
}

// gauge and counter read a one-label gauge or counter from h's registry.
func gauge(t *testing.T, h *host, name, label string) float64 {
	t.Helper()
	return metricValue(t, h, name, label).GetGauge().GetValue()
}

func counter(t *testing.T, h *host, name, label string) float64 {
	t.Helper()
	return metricValue(t, h, name, label).GetCounter().GetValue()
}

func metricValue(t *testing.T, h *host, name, label string) *dto.Metric {
	t.Helper()
	mfs, err := h.n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if ls := m.GetLabel(); len(ls) == 0 && label == "" || len(ls) > 0 && ls[0].GetValue() == label {
				return m
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return nil
}

// A kernel-mode start that fails after the device was made takes the
// device and the filter back.
func TestKernelFailedStartCleansUp(t *testing.T) {
	vx := newFakeVXLAN()
	h := kernelHost(newHost(t, fakes.NewHub(), "a", 1, "10.244.1.0/24"), DatapathKernel, vx)
	prev := h.mod
	h.mod = func(d *Deps) {
		prev(d)
		d.OpenTUN = func(tun.Config, *slog.Logger) (TUN, error) { return nil, errors.New("no TUN here") }
	}
	if err := h.start(); err == nil || !strings.Contains(err.Error(), "no TUN here") {
		t.Fatalf("start: %v", err)
	}
	if got := vx.Dump(); len(got) != 0 {
		t.Errorf("the failed start left %q", got)
	}
	if vx.closed != 1 {
		t.Errorf("kernel closed %d times, want once", vx.closed)
	}
}

// The watchdog's check of the kernel path: the probe speaks as each routed
// peer in turn; what went missing in the kernel is put back; a probe the
// kernel drops fails the check.
func TestKernelWatchdogCheck(t *testing.T) {
	u := fakes.NewHub()
	vx := newFakeVXLAN()
	a := kernelHost(newHost(t, u, "a", 1, "10.244.1.0/24"), DatapathKernel, vx)
	b := kernelHost(newHost(t, u, "b", 2, "10.244.2.0/24"), DatapathKernel, newFakeVXLAN())
	a.mustStart()
	kp := a.n.dp.(*kernelPath)
	if err := kp.check(1, time.Second); err != nil {
		t.Fatalf("check without peers: %v", err)
	}
	if _, n := vx.lastProbe(); n != 0 {
		t.Errorf("probed %d times without a peer to speak for", n)
	}
	b.mustStart(a)
	eventually(t, "a programs b", stateIs(vx, wantState("10.244.1.0/24", peerB)))

	if err := kp.check(7, time.Second); err != nil {
		t.Fatalf("check: %v", err)
	}
	p, _ := vx.lastProbe()
	want := VXLANProbe{From: netip.MustParseAddrPort("127.0.0.2:0"), To: netip.MustParseAddrPort("127.0.0.1:8472"), VNI: 1,
		SrcMAC: encap.MAC{2, 0x57, 10, 244, 2, 0}, DstMAC: encap.MAC{2, 0x57, 10, 244, 1, 0},
		InnerSrc: netip.MustParseAddr("10.244.2.0"), InnerDst: netip.MustParseAddr("10.244.1.0"), Payload: router.ProbePayload(7)}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Errorf("probe %+v\nwant  %+v", p, want)
	}

	// Someone removes b's route, then the device itself: each check puts
	// it back.
	idx := kp.dev.Load().Index()
	if err := vx.RouteDel(kernelvx.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), LinkIndex: idx}); err != nil {
		t.Fatal(err)
	}
	if err := kp.check(8, time.Second); err != nil {
		t.Fatalf("check after a route went: %v", err)
	}
	if err := stateIs(vx, wantState("10.244.1.0/24", peerB))(); err != nil {
		t.Errorf("after the check: %v", err)
	}
	if err := vx.LinkDel(idx); err != nil {
		t.Fatal(err)
	}
	if err := kp.check(9, time.Second); err != nil {
		t.Fatalf("check after the device went: %v", err)
	}
	if err := stateIs(vx, wantState("10.244.1.0/24", peerB))(); err != nil {
		t.Errorf("after the device was made again: %v", err)
	}

	// The kernel drops the probe: the check fails, and so does WaitProbes.
	vx.mu.Lock()
	vx.probeErr = errors.New("dropped")
	vx.mu.Unlock()
	if err := kp.check(10, time.Second); err == nil || err.Error() != "dropped" {
		t.Errorf("check with the probe dropped: %v", err)
	}
	if kp.WaitProbes(11, true, 50*time.Millisecond) {
		t.Error("WaitProbes passed with the probe dropped")
	}
	// A change the kernel refuses fails the check too, with the error.
	vx.mu.Lock()
	vx.probeErr = nil
	vx.mu.Unlock()
	vx.FailOn("NeighSet", errors.New("EPERM"))
	if err := vx.NeighDel(kernelvx.Neigh{IP: netip.MustParseAddr("10.244.2.0"), LinkIndex: kp.dev.Load().Index()}); err != nil {
		t.Fatal(err)
	}
	if err := kp.check(12, time.Second); err == nil || !strings.Contains(err.Error(), "EPERM") {
		t.Errorf("check with the neighbour refused: %v", err)
	}
	if st := a.n.Status(); st.Kernel == nil || !strings.Contains(st.Kernel.Error, "EPERM") {
		t.Errorf("status after a refused change: %+v", st.Kernel)
	}
	vx.FailOn("NeighSet", nil)
}

// Two kernel-mode hosts claim one subnet: the later moves, and its device
// follows (new address and VTEP MAC, the filter's local subnet), and the
// other programs the new subnet and MAC.
func TestKernelSubnetMove(t *testing.T) {
	u := fakes.NewHub()
	vxA, vxB := newFakeVXLAN(), newFakeVXLAN()
	a := kernelHost(newHost(t, u, "a", 1, ""), DatapathKernel, vxA)
	b := kernelHost(newHost(t, u, "b", 2, ""), DatapathKernel, vxB)
	same := netip.MustParsePrefix("10.244.5.0/24")
	for i, h := range []*host{a, b} {
		h.s.Pools[0].Min, h.s.Pools[0].Max = netip.MustParseAddr("10.244.5.0"), netip.MustParseAddr("10.244.6.0")
		if err := lease.Save(h.s.StateDir, lease.Lease{Networks: []netip.Prefix{network}, Subnets: []netip.Prefix{same}, Claimed: time.Now().Add(-time.Hour).UnixMilli() + int64(1000*(i+1))}); err != nil {
			t.Fatal(err)
		}
	}
	a.mustStart()
	b.mustStart(a)
	moved := netip.MustParsePrefix("10.244.6.0/24")
	eventually(t, "b moves and its device follows", stateIs(vxB, wantState(moved.String(), peerLines("10.244.5.0/24", "02:57:0a:f4:05:00", "127.0.0.1"))))
	if link := linkLine(vxB); !strings.Contains(link, " mac 02:57:0a:f4:06:00 ") {
		t.Errorf("b's device after the move: %s", link)
	}
	eventually(t, "a programs b's new subnet", stateIs(vxA, wantState(same.String(), peerLines(moved.String(), "02:57:0a:f4:06:00", "127.0.0.2"))))
}

// The probe datagram decodes as a kernel VTEP would decode it: VXLAN with
// the VNI, from the peer's MAC to ours, an IPv4 or IPv6 UDP packet with
// valid checksums, to the listener's port.
func TestVXLANProbeDatagram(t *testing.T) {
	for _, tc := range []struct{ src, dst string }{{"10.244.2.0", "10.244.1.0"}, {"fd00:10:244:2::", "fd00:10:244:1::"}} {
		p := VXLANProbe{VNI: 42, SrcMAC: encap.MAC{2, 0, 0, 0, 0, 2}, DstMAC: encap.MAC{2, 0, 0, 0, 0, 1},
			InnerSrc: netip.MustParseAddr(tc.src), InnerDst: netip.MustParseAddr(tc.dst), Payload: router.ProbePayload(99)}
		f, err := encap.ParseVXLAN(p.Datagram(40000))
		if err != nil {
			t.Fatal(err)
		}
		if f.VNI != 42 || f.Src != p.SrcMAC || f.Dst != p.DstMAC || f.EtherType != encap.EtherTypeFor(f.Payload) {
			t.Errorf("%s: frame %+v", tc.src, f)
		}
		src, dst, ok := encap.IPAddrs(f.Payload)
		if !ok || src != p.InnerSrc || dst != p.InnerDst || encap.IPLen(f.Payload) != len(f.Payload) {
			t.Errorf("%s: inner %s -> %s %v", tc.src, src, dst, ok)
		}
		ipLen := 20
		if p.InnerSrc.Is6() {
			ipLen = 40
		} else if onesSum(f.Payload[:20], 0) != 0xffff {
			t.Errorf("%s: bad IPv4 header checksum", tc.src)
		}
		udp := f.Payload[ipLen:]
		if port := int(udp[2])<<8 | int(udp[3]); port != 40000 || string(udp[8:]) != string(p.Payload) {
			t.Errorf("%s: UDP to %d with %q", tc.src, port, udp[8:])
		}
		// The UDP checksum verifies: the sum over the pseudo-header and
		// the datagram is all ones.
		s, d := p.InnerSrc.AsSlice(), p.InnerDst.AsSlice()
		pseudo := append(append(s, d...), 0, 17, 0, byte(len(udp)))
		if onesSum(udp, onesSum(pseudo, 0)) != 0xffff {
			t.Errorf("%s: bad UDP checksum", tc.src)
		}
	}
}

// Traffic counts come from the VXLAN device's counters and drops from the
// filter's, in the status and the metrics, and survive the device being
// replaced (a subnet move, a new underlay address).
func TestKernelCounters(t *testing.T) {
	vx := newFakeVXLAN()
	a := kernelHost(newHost(t, fakes.NewHub(), "a", 1, "10.244.1.0/24"), DatapathKernel, vx)
	a.mustStart()
	kp := a.n.dp.(*kernelPath)
	vx.SetStats(kp.dev.Load().Index(), kernelvx.Stats{TxPackets: 10, TxBytes: 1000, RxPackets: 20, RxBytes: 2000})
	vx.CountDrops(kernelvx.FilterCounters{UnknownPeer: kernelvx.Counter{Packets: 5, Bytes: 500}, Spoofed: kernelvx.Counter{Packets: 2}, NotLocal: kernelvx.Counter{Packets: 1}, SlowPath: kernelvx.Counter{Packets: 3}})
	check := func(when string, tot router.Totals, unknown uint64) {
		t.Helper()
		st := a.n.Status()
		if st.Totals != tot || st.Drops["unknown_peer"] != unknown || st.Drops["spoofed"] != 2 || st.Drops["not_local"] != 1 {
			t.Errorf("%s: totals %+v drops %v", when, st.Totals, st.Drops)
		}
		if got := counter(t, a, "weft_dropped_packets_total", "unknown_peer"); got != float64(unknown) {
			t.Errorf("%s: weft_dropped_packets_total{reason=unknown_peer} = %v", when, got)
		}
		if got := counter(t, a, "weft_kernel_filter_slow_path_packets_total", ""); got != 3 {
			t.Errorf("%s: weft_kernel_filter_slow_path_packets_total = %v", when, got)
		}
	}
	check("counted", router.Totals{TxPackets: 10, TxBytes: 1000, RxPackets: 20, RxBytes: 2000}, 5)
	if got := gauge(t, a, "weft_datapath", "kernel"); got != 1 {
		t.Errorf("weft_datapath{mode=kernel} = %v", got)
	}
	if got := gauge(t, a, "weft_datapath", "userspace"); got != 0 {
		t.Errorf("weft_datapath{mode=userspace} = %v", got)
	}

	// A new MAC makes kernelvx create the link anew (its counters start
	// at zero) and rebuild the filter (its counters too).
	kp.mu.Lock()
	cfg := kp.cfg
	cfg.MAC = encap.MAC{2, 0, 0, 0, 0, 1}
	kp.replace(cfg)
	kp.mu.Unlock()
	vx.SetStats(kp.dev.Load().Index(), kernelvx.Stats{TxPackets: 1, TxBytes: 100})
	vx.CountDrops(kernelvx.FilterCounters{UnknownPeer: kernelvx.Counter{Packets: 1}})
	check("after the device was replaced", router.Totals{TxPackets: 11, TxBytes: 1100, RxPackets: 20, RxBytes: 2000}, 6)
}

// The underlay address changes while running: the VXLAN device sends from
// the new one (kernelvx makes it anew, the filter keeps its peers), and
// the peer's kernel learns it (FDB entry and filter).
func TestKernelUnderlayChange(t *testing.T) {
	u := fakes.NewHub()
	vxA, vxB := newFakeVXLAN(), newFakeVXLAN()
	a := kernelHost(newHost(t, u, "a", 1, "10.244.1.0/24"), DatapathKernel, vxA)
	b := kernelHost(newHost(t, u, "b", 2, "10.244.2.0/24"), DatapathKernel, vxB)
	a.mustStart()
	b.mustStart(a)
	eventually(t, "a programs b", stateIs(vxA, wantState("10.244.1.0/24", peerB)))
	eventually(t, "b watches its underlay", func() error {
		if !b.kernel.Watching() {
			return errors.New("no watcher")
		}
		return nil
	})
	b.kernel.SetAddr(netip.MustParseAddr("127.0.0.22"))
	eventually(t, "a programs b's new address", stateIs(vxA, wantState("10.244.1.0/24", peerLines("10.244.2.0/24", "02:57:0a:f4:02:00", "127.0.0.22"))))
	eventually(t, "b's device sends from its new address", func() error {
		if l := linkLine(vxB); !strings.Contains(l, " local 127.0.0.22 ") || !strings.HasSuffix(l, " up") {
			return fmt.Errorf("b's device: %s", l)
		}
		return stateIs(vxB, wantState("10.244.2.0/24", peerLines("10.244.1.0/24", "02:57:0a:f4:01:00", "127.0.0.1")))()
	})
}
