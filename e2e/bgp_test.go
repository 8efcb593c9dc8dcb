package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
	"github.com/weftnet/weft/lease"
)

// BGP: four weft hosts in two racks (two L2 segments) behind a router
// namespace that runs a real bird2 as the top-of-rack router, each host
// peering with it; a machine on a third segment plays the outside world.
//
//	rack 1 192.168.71.0/24: a=.1 (10.244.1.0/24), b=.2 (10.244.2.0/24), router=.254
//	rack 2 192.168.72.0/24: c=.1 (10.244.3.0/24), d=.2 (10.244.4.0/24), router=.254
//	outside 192.168.73.0/24: x=.1, router=.254
//
// The hosts run --encap none: with BGP, the router carries the traffic
// between racks natively (the cluster network's kernel route goes to the
// router, not to weft0), and the router's table is all bird learned.

const (
	bgpRouterAS = 65000
	bgpHostAS   = 64512
)

// birdConf is the router's configuration: one passive eBGP session per
// host (the hosts connect), every learned route installed in the router's
// kernel, nothing exported to the hosts; after a refused session bird
// waits 1-5 s (not its default 60-300 s) before it accepts another, so the
// test's reload back to the right AS is quick. Graceful restart is BIRD's
// default (aware): a host whose session drops without a notification
// keeps its routes for the restart time it advertised.
func birdConf(hosts map[string]netip.Addr, hostAS map[string]int, dual bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `router id 192.168.71.254;
log stderr all;
protocol device { scan time 2; }
protocol direct { disabled; }
protocol kernel { ipv4 { import none; export all; }; learn off; }
`)
	v6 := ""
	if dual {
		// IPv6 paths over the same (IPv4) sessions, as MP-BGP.
		fmt.Fprintf(&b, "protocol kernel { ipv6 { import none; export all; }; learn off; }\n")
		v6 = "\n  ipv6 { import all; export none; };"
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		addr := hosts[name]
		local := "192.168.71.254"
		if strings.HasPrefix(addr.String(), "192.168.72.") {
			local = "192.168.72.254"
		}
		fmt.Fprintf(&b, `protocol bgp h_%s {
  local %s as %d;
  neighbor %s as %d;
  passive on;
  hold time 30;
  error wait time 1, 5;
  ipv4 { import all; export none; };%s
}
`, name, local, bgpRouterAS, addr, hostAS[name], v6)
	}
	return b.String()
}

type bgpLab struct {
	*cluster
	router *netlab.Host
	x      *netlab.Host
	sock   string
	bird   *netlab.Proc
}

// birdc runs birdc against the router's bird.
func (l *bgpLab) birdc(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := l.router.Run(ctx, "birdc", append([]string{"-s", l.sock}, args...)...)
	return string(out), err
}

var birdRoute = regexp.MustCompile(`(?m)^([0-9a-f:.]+/\d+)\s+unicast \[h_(\w+) [^\]]*\]\s+\*?\s*\(\d+\)(?:\s+\[[^\]]*\])?\s*\n\s+via (\S+) on`)

// routes is the router's BGP table: prefix -> next hop.
func (l *bgpLab) routes() (map[string]string, string, error) {
	out, err := l.birdc("show", "route", "protocol", "h_*")
	if err != nil {
		// A pattern is not accepted by every bird: all routes then.
		out, err = l.birdc("show", "route")
		if err != nil {
			return nil, out, err
		}
	}
	m := map[string]string{}
	for _, mm := range birdRoute.FindAllStringSubmatch(out, -1) {
		m[mm[1]] = mm[3]
	}
	return m, out, nil
}

// newBGPLab builds the lab with the hosts' encapsulation enc (none: native
// routing through the router).
func newBGPLab(t *testing.T, enc string, dual bool) *bgpLab {
	t.Helper()
	tp := newLab(t, "bird", "birdc", "tcpdump", "iperf3")
	s1 := tp.segment("seg71", "192.168.71.0/24")
	s2 := tp.segment("seg72", "192.168.72.0/24")
	s3 := tp.segment("seg73", "192.168.73.0/24")
	l := &bgpLab{cluster: tp}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if l.router, err = tp.lab.Host("r"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		seg         *netlab.Segment
		addr, addr6 string
	}{{s1, "192.168.71.254/24", "fd00:71::fe/64"}, {s2, "192.168.72.254/24", "fd00:72::fe/64"}, {s3, "192.168.73.254/24", "fd00:73::fe/64"}} {
		ifn, err := l.router.Attach(a.seg, netip.MustParsePrefix(a.addr))
		if err != nil {
			t.Fatal(err)
		}
		if dual {
			if _, err := l.router.IP(ctx, "-6", "addr", "add", a.addr6, "dev", ifn, "nodad"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dual {
		if out, err := l.router.Run(ctx, "sysctl", "-w", "net.ipv6.conf.all.forwarding=1"); err != nil {
			t.Fatalf("router: %v: %s", err, out)
		}
	}
	if out, err := l.router.Run(ctx, "sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("router: %v: %s", err, out)
	}
	if l.x, err = tp.lab.Host("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.x.Attach(s3, netip.MustParsePrefix("192.168.73.1/24")); err != nil {
		t.Fatal(err)
	}
	// x knows only that the cluster network is behind the router.
	if _, err := l.x.IP(ctx, "route", "add", overlayNetwork, "via", "192.168.73.254"); err != nil {
		t.Fatal(err)
	}
	if dual {
		if _, err := l.x.IP(ctx, "-6", "addr", "add", "fd00:73::1/64", "dev", "eth0", "nodad"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.x.IP(ctx, "-6", "route", "add", overlayNetwork6.String(), "via", "fd00:73::fe"); err != nil {
			t.Fatal(err)
		}
	}

	hosts := map[string]netip.Addr{}
	hostAS := map[string]int{}
	seed := []string{"192.168.71.1"}
	for i, h := range []struct {
		name string
		seg  *netlab.Segment
		addr string
		gw   string
		join []string
	}{{"a", s1, "192.168.71.1", "192.168.71.254", nil}, {"b", s1, "192.168.71.2", "192.168.71.254", seed},
		{"c", s2, "192.168.72.1", "192.168.72.254", seed}, {"d", s2, "192.168.72.2", "192.168.72.254", seed}} {
		n := tp.addNode(h.name, h.seg, netip.MustParseAddr(h.addr), i+1)
		hosts[h.name], hostAS[h.name] = n.underlay, bgpHostAS
		// The neighbour and its AS are in a config file, so that a reload
		// can change them.
		cfg := filepath.Join(n.files.Dir, "bgp.yaml")
		writeFile(t, cfg, fmt.Sprintf("bgpPeers:\n  - {addr: %s, asn: %d}\n", h.gw, bgpRouterAS))
		n.args = runArgs(n, h.join, "--encap", enc, "--bgp-asn", fmt.Sprint(bgpHostAS), "--config", cfg)
		if dual {
			// An IPv6 address on the underlay beside the IPv4 one: the
			// next hop of the IPv6 subnet.
			dualStackNode(n, h.join, "--encap", enc, "--bgp-asn", fmt.Sprint(bgpHostAS), "--config", cfg)
			seg6 := "fd00:" + h.addr[8:10]
			if _, err := n.host.IP(ctx, "-6", "addr", "add", seg6+"::"+h.addr[11:]+"/64", "dev", "eth0", "nodad"); err != nil {
				t.Fatal(err)
			}
			for _, other := range []string{"fd00:71::/64", "fd00:72::/64", "fd00:73::/64"} {
				if !strings.HasPrefix(other, seg6+":") {
					if _, err := n.host.IP(ctx, "-6", "route", "add", other, "via", seg6+"::fe"); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		// The other segments through the router, never a default route.
		for _, other := range []string{"192.168.71.0/24", "192.168.72.0/24", "192.168.73.0/24"} {
			if netip.MustParsePrefix(other).Contains(n.underlay) {
				continue
			}
			if _, err := n.host.IP(ctx, "route", "add", other, "via", h.gw); err != nil {
				t.Fatal(err)
			}
		}
	}

	// e (rack 2, 192.168.72.3) starts later, in the subnet move.
	hosts["e"], hostAS["e"] = netip.MustParseAddr("192.168.72.3"), bgpHostAS
	l.sock = filepath.Join(tp.lab.Dir(), "bird.ctl")
	conf := filepath.Join(tp.lab.Dir(), "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConf(hosts, hostAS, dual)), 0o644); err != nil {
		t.Fatal(err)
	}
	if l.bird, err = l.router.Start("bird", "-c", conf, "-s", l.sock, "-f", "-P", filepath.Join(tp.lab.Dir(), "bird.pid")); err != nil {
		t.Fatal(err)
	}
	tp.addExtra(l.router, []string{"birdc", "-s", l.sock, "show", "protocols", "all"}, []string{"birdc", "-s", l.sock, "show", "route", "all"}, []string{"ip", "route"})
	tp.addExtra(l.x, []string{"ip", "route"})
	if err := pollUntil(time.Now().Add(10*time.Second), func() error {
		if l.bird.Exited() {
			return permanent{fmt.Errorf("bird exited: %s", l.bird.Logs())}
		}
		_, err := l.birdc("show", "status")
		return err
	}); err != nil {
		t.Fatalf("bird did not come up: %v", err)
	}
	return l
}

// waitRoutes waits until the router's table is exactly want.
func (l *bgpLab) waitRoutes(t *testing.T, within time.Duration, want map[string]string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	err := pollUntil(start.Add(within), func() error {
		got, out, err := l.routes()
		last = out
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("router's routes %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nbirdc show route:\n%s", err, last)
	}
	return time.Since(start)
}

func TestBGP(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the other parallel tests (make e2e -parallel 4)
	l := newBGPLab(t, "none", false)
	l.startAll()
	l.waitFormed(formationTimeout)
	a, b, c, d := l.by["a"], l.by["b"], l.by["c"], l.by["d"]
	all := map[string]string{}
	for _, n := range l.nodes {
		all[n.subnet.String()] = n.underlay.String()
	}

	t.Run("router learns every subnet with its host as next hop", func(t *testing.T) {
		took := l.waitRoutes(t, 20*time.Second, all)
		t.Logf("the router's table complete %v after the cluster formed", took.Round(time.Millisecond))
		// The speaker reads its sessions' states once a second: the
		// status and the metrics may lag the router's table by that much.
		for _, n := range l.nodes {
			gw := "192.168.71.254"
			if !onLink(n, a) {
				gw = "192.168.72.254"
			}
			err := pollUntil(time.Now().Add(5*time.Second), func() error {
				st, err := status(n)
				if err != nil {
					return err
				}
				if st.BGP == nil || len(st.BGP.Neighbors) != 1 || !st.BGP.Neighbors[0].Up() || st.BGP.Neighbors[0].Sent != 1 {
					return fmt.Errorf("status of %s: bgp %+v, want one established neighbour with one prefix sent", n.name, st.BGP)
				}
				m, _, err := metrics(context.Background(), n)
				if err != nil {
					return err
				}
				if v, ok := m.value("weft_bgp_session_up", "neighbor", gw); !ok || v != 1 {
					return fmt.Errorf("%s: weft_bgp_session_up{neighbor=%q} = %v (%v), want 1", n.name, gw, v, ok)
				}
				if v, ok := m.value("weft_bgp_announced_prefixes"); !ok || v != 1 {
					return fmt.Errorf("%s: weft_bgp_announced_prefixes = %v (%v), want 1", n.name, v, ok)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A container on each host, through weft's CNI plugin (cni_test.go).
	e := findCNIEnv(t, l.lab.Dir())
	cts := map[string]*container{}
	for _, n := range l.nodes {
		cts[n.name] = addContainer(t, ctx, l.cluster, e, newCNIHost(t, l.cluster, n), n.name+"c1", cniNet)
	}

	t.Run("the outside reaches each host's container at its own address", func(t *testing.T) {
		// tcpdump on x sees the containers themselves answer.
		pcap := startTcpdump(t, l.x, "eth0", 5*time.Second, "-n", "-l", "icmp")
		for _, n := range l.nodes {
			if err := pingOKFrom(ctx, l.x, cts[n.name].ip, 2); err != nil {
				t.Errorf("x -> %s's container %s: %v", n.name, cts[n.name].ip, err)
			}
			if err := pingOKFrom(ctx, l.x, n.overlay, 1); err != nil {
				t.Errorf("x -> %s's overlay address %s: %v", n.name, n.overlay, err)
			}
		}
		time.Sleep(300 * time.Millisecond)
		_ = pcap.Stop(2 * time.Second)
		logs := pcap.Logs()
		for _, n := range l.nodes {
			if !strings.Contains(logs, cts[n.name].ip.String()+" > 192.168.73.1: ICMP echo reply") {
				t.Errorf("tcpdump on x saw no echo reply from %s's container %s:\n%s", n.name, cts[n.name].ip, tail(logs, 20))
			}
			if strings.Contains(logs, n.underlay.String()+" > 192.168.73.1") {
				t.Errorf("tcpdump on x saw %s's underlay address answer:\n%s", n.name, tail(logs, 20))
			}
		}
	})

	t.Run("racks reach each other through the router with no weft datagram", func(t *testing.T) {
		// The cluster network goes to the router, not weft0.
		for _, tc := range []struct {
			from, to *node
			want     string
		}{{a, c, "via 192.168.71.254 dev eth0"}, {d, b, "via 192.168.72.254 dev eth0"}, {a, b, "via 192.168.71.2 dev eth0"}} {
			out, err := tc.from.host.IP(ctx, "route", "get", tc.to.overlay.String())
			if err != nil || !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "src "+tc.from.overlay.String()) {
				t.Errorf("on %s, ip route get %s = %q (%v), want %q from %s", tc.from.name, tc.to.overlay, strings.TrimSpace(string(out)), err, tc.want, tc.from.overlay)
			}
		}
		pcap := startTcpdump(t, l.router, "any", 5*time.Second, "-n", "-l", "udp port 8285 or udp port 8472")
		if n := pingPairs(t, ctx, false, l.nodes, func(src, dst *node) bool { return !onLink(src, dst) }); n != 8 {
			t.Errorf("pinged %d cross-rack pairs of hosts, want 8", n)
		}
		var all []*container
		for _, n := range l.nodes {
			all = append(all, cts[n.name])
		}
		pingContainers(t, ctx, all, func(src *container) []netip.Addr {
			var dsts []netip.Addr
			for _, dst := range all {
				if dst != src {
					dsts = append(dsts, dst.ip)
				}
			}
			return dsts
		})
		iperfCheck(t, ctx, cts["a"].ns, cts["c"].ns, cts["c"].ip, "container on a -> container on c, across the racks")
		_ = pcap.Stop(2 * time.Second)
		if logs := pcap.Logs(); strings.Contains(logs, " UDP") || strings.Contains(logs, "VXLAN") {
			t.Errorf("tcpdump on the router saw weft datagrams:\n%s", tail(logs, 20))
		}
	})

	t.Run("a host stopped is withdrawn within 5 s", func(t *testing.T) {
		sigAt := stopNode(t, b)
		want := map[string]string{}
		for k, v := range all {
			if k != b.subnet.String() {
				want[k] = v
			}
		}
		l.waitRoutes(t, 5*time.Second-time.Since(sigAt), want)
		t.Logf("b's subnet withdrawn %v after SIGTERM", time.Since(sigAt).Round(time.Millisecond))
		l.start(b)
		if err := waitReady(b, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		l.waitRoutes(t, 20*time.Second, all)
	})

	t.Run("a host killed and restarted keeps its route throughout", func(t *testing.T) {
		if err := c.proc.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.proc.Wait(5 * time.Second)
		killedAt := time.Now()
		// Still routed while c is down (graceful restart).
		for time.Since(killedAt) < 2*time.Second {
			got, out, err := l.routes()
			if err != nil || got[c.subnet.String()] != c.underlay.String() {
				t.Fatalf("%v after kill -9: c's route is gone (%v)\n%s", time.Since(killedAt).Round(time.Millisecond), err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		l.start(c)
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, out, err := l.routes()
			if err != nil || got[c.subnet.String()] != c.underlay.String() {
				t.Fatalf("%v after kill -9, c restarting: c's route is gone (%v)\n%s", time.Since(killedAt).Round(time.Millisecond), err, out)
			}
			st, err := status(c)
			if err == nil && st.BGP != nil && len(st.BGP.Neighbors) == 1 && st.BGP.Neighbors[0].Up() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("c's session did not come back within 30 s: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// After the restart the route is fresh, not stale, and stays.
		time.Sleep(3 * time.Second)
		out, _ := l.birdc("show", "route", "all", c.subnet.String())
		if strings.Contains(out, "stale") {
			t.Errorf("c's route is still stale after its session came back:\n%s", out)
		}
		l.waitRoutes(t, 5*time.Second, all)
		if err := pingOK(ctx, a, c.overlay, 1); err != nil {
			t.Errorf("a -> c after c's restart: %v", err)
		}
	})

	t.Run("a wrong neighbour AS is refused and shown", func(t *testing.T) {
		cfg := filepath.Join(d.files.Dir, "bgp.yaml")
		writeFile(t, cfg, fmt.Sprintf("bgpPeers:\n  - {addr: 192.168.72.254, asn: %d}\n", bgpRouterAS+99))
		if err := d.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var last string
		if err := pollUntil(time.Now().Add(15*time.Second), func() error {
			st, err := status(d)
			if err != nil {
				return err
			}
			last = string(st.raw)
			if st.BGP == nil || len(st.BGP.Neighbors) != 1 {
				return fmt.Errorf("no neighbour")
			}
			nb := st.BGP.Neighbors[0]
			if nb.Up() || nb.ASN != bgpRouterAS+99 || !strings.Contains(strings.ToLower(nb.LastError), "bad peer as") {
				return fmt.Errorf("neighbour %+v", nb)
			}
			return nil
		}); err != nil {
			t.Fatalf("d does not show the refusal: %v\n%s", err, last)
		}
		ctxS, cancelS := context.WithTimeout(ctx, 10*time.Second)
		defer cancelS()
		out, _ := d.host.Run(ctxS, weftBin, "status", "--socket", d.sock)
		t.Logf("weft status on d:\n%s", out)
		if !strings.Contains(strings.ToLower(string(out)), "bad peer as") {
			t.Errorf("weft status on d does not show the bad peer AS")
		}
		// d's route is gone from the router (the session is down), the
		// others stay.
		want := map[string]string{}
		for k, v := range all {
			if k != d.subnet.String() {
				want[k] = v
			}
		}
		l.waitRoutes(t, 10*time.Second, want)
		if proto, _ := l.birdc("show", "protocols", "h_d"); strings.Contains(proto, "Established") {
			t.Errorf("bird shows h_d established:\n%s", proto)
		}
		// A reload back to the right AS brings it back.
		writeFile(t, cfg, fmt.Sprintf("bgpPeers:\n  - {addr: 192.168.72.254, asn: %d}\n", bgpRouterAS))
		if err := d.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		l.waitRoutes(t, 20*time.Second, all)
	})

	t.Run("a subnet move is announced and the old subnet withdrawn", func(t *testing.T) {
		// e takes d's subnet while d is away (an automatic subnet kept in
		// its lease, claimed a little ahead of our clock); d comes back
		// with it, claimed earlier, and wins: e moves after it is ready.
		stopNode(t, d)
		want := map[string]string{}
		for k, v := range all {
			if k != d.subnet.String() {
				want[k] = v
			}
		}
		l.waitRoutes(t, 5*time.Second, want)
		en := l.addNode("e", l.segs["seg72"], netip.MustParseAddr("192.168.72.3"), 5)
		en.subnet, en.overlay = netip.Prefix{}, netip.Addr{}
		if err := lease.Save(en.files.StateDir, lease.Lease{Networks: []netip.Prefix{overlayPrefix}, Subnets: []netip.Prefix{d.subnet}, Claimed: time.Now().Add(2 * time.Minute).UnixMilli()}); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(en.files.Dir, "bgp.yaml")
		writeFile(t, cfg, fmt.Sprintf("bgpPeers:\n  - {addr: 192.168.72.254, asn: %d}\n", bgpRouterAS))
		en.args = runArgs(en, []string{"192.168.71.1"}, "--encap", "none", "--bgp-asn", fmt.Sprint(bgpHostAS), "--config", cfg)
		for _, other := range []string{"192.168.71.0/24", "192.168.73.0/24"} {
			if _, err := en.host.IP(ctx, "route", "add", other, "via", "192.168.72.254"); err != nil {
				t.Fatal(err)
			}
		}
		l.start(en)
		if err := waitReady(en, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		want[d.subnet.String()] = en.underlay.String()
		l.waitRoutes(t, 10*time.Second, want)
		t.Logf("e announces d's subnet %s while d is away", d.subnet)

		l.start(d)
		var moved netip.Prefix
		if err := pollUntil(time.Now().Add(20*time.Second), func() error {
			st, err := status(en)
			if err != nil {
				return err
			}
			if moved, err = netip.ParsePrefix(st.Node.Subnet); err != nil || moved == d.subnet {
				return fmt.Errorf("e's subnet is %s", st.Node.Subnet)
			}
			return nil
		}); err != nil {
			t.Fatalf("e did not move off d's subnet: %v", err)
		}
		want[d.subnet.String()] = d.underlay.String()
		want[moved.String()] = en.underlay.String()
		l.waitRoutes(t, 10*time.Second, want)
		t.Logf("e moved to %s: announced, and d's subnet is d's again at the router", moved)
	})
}

// TestBGPTunnel: with a tunnel (encap udp) the announcements make the
// containers reachable from outside, natively through the router, while
// the hosts still reach each other through the overlay (Calico's IPIP
// Always). The overlay is dual stack and the segments carry IPv6 too: the
// router learns each IPv6 subnet with the host's IPv6 underlay address as
// next hop, over the same IPv4 session (MP-BGP).
func TestBGPTunnel(t *testing.T) {
	t.Parallel() // waits more than it works: runs beside the other parallel tests (make e2e -parallel 4)
	l := newBGPLab(t, "udp", true)
	l.startAll()
	l.waitFormed(formationTimeout)
	all := map[string]string{}
	for _, n := range l.nodes {
		all[n.subnet.String()] = n.underlay.String()
		// The IPv6 subnet with the host's IPv6 underlay address.
		all[n.subnet6.String()] = "fd00:" + n.underlay.String()[8:10] + "::" + n.underlay.String()[11:]
	}
	l.waitRoutes(t, 20*time.Second, all)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, c := l.by["a"], l.by["c"]
	e := findCNIEnv(t, l.lab.Dir())
	ca := addContainer(t, ctx, l.cluster, e, newCNIHost(t, l.cluster, a), "ac1", cniNet)
	cc := addContainer(t, ctx, l.cluster, e, newCNIHost(t, l.cluster, c), "cc1", cniNet)

	// From outside: native, the containers' own addresses answer.
	pcap := startTcpdump(t, l.x, "eth0", 5*time.Second, "-n", "-l", "icmp")
	for _, ct := range []*container{ca, cc} {
		if err := pingOKFrom(ctx, l.x, ct.ip, 2); err != nil {
			t.Errorf("x -> container %s: %v", ct.ip, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	_ = pcap.Stop(2 * time.Second)
	for _, n := range []*node{a, c} {
		if err := pingOKFrom(ctx, l.x, n.overlay6, 2); err != nil {
			t.Errorf("x -> %s's IPv6 overlay address %s: %v", n.name, n.overlay6, err)
		}
	}
	for _, ct := range []*container{ca, cc} {
		if !strings.Contains(pcap.Logs(), ct.ip.String()+" > 192.168.73.1: ICMP echo reply") {
			t.Errorf("tcpdump on x saw no echo reply from container %s:\n%s", ct.ip, tail(pcap.Logs(), 20))
		}
	}

	// Host to host: the overlay, weft's datagrams through the router.
	out, err := a.host.IP(ctx, "route", "get", c.overlay.String())
	if err != nil || !strings.Contains(string(out), "dev weft0") {
		t.Errorf("on a, ip route get %s = %q (%v), want dev weft0", c.overlay, strings.TrimSpace(string(out)), err)
	}
	udp := startTcpdump(t, l.router, "any", 5*time.Second, "-n", "-l", "udp port 8285")
	if err := pingOKFrom(ctx, ca.ns, cc.ip, 3); err != nil {
		t.Errorf("container on a -> container on c: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	_ = udp.Stop(2 * time.Second)
	if !strings.Contains(udp.Logs(), a.underlay.String()) || !strings.Contains(udp.Logs(), "UDP") {
		t.Errorf("tcpdump on the router saw no weft datagram from a:\n%s", tail(udp.Logs(), 20))
	}
}
