package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// The kernel data path (--datapath kernel|auto, issue 25): weft programs
// the kernel's VXLAN device (weft-vx) from gossip and guards its port with
// the nftables table weft_vx; the kernel carries the packets.

const (
	vxDevice    = "weft-vx"
	vxTable     = "weft_vx"
	kernelFlags = "--encap vxlan --datapath kernel"
)

// kernelEntries is what a host's kernel holds for the kernel data path,
// one sorted list per kind, as ip(8), bridge(8) and nft(8) print it.
type kernelEntries struct {
	links  []string // weft-vx, if it exists (and weft0)
	routes []string // routes carrying weft's protocol (87)
	neighs []string // weft-vx's permanent neighbour entries
	fdb    []string // weft-vx's forwarding database
	tables []string // nftables tables named weft_vx
}

func (e kernelEntries) String() string {
	return fmt.Sprintf("links %q\nroutes %q\nneighbours %q\nfdb %q\nnft tables %q", e.links, e.routes, e.neighs, e.fdb, e.tables)
}

// empty reports whether nothing of a kernel data path is left.
func (e kernelEntries) empty() bool {
	return len(e.links) == 0 && len(e.routes) == 0 && len(e.neighs) == 0 && len(e.fdb) == 0 && len(e.tables) == 0
}

// readKernel reads n's kernel data path entries.
func readKernel(ctx context.Context, h *netlab.Host) (kernelEntries, error) {
	var e kernelEntries
	lines := func(out []byte) []string {
		var l []string
		for _, s := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if s = strings.TrimSpace(s); s != "" {
				l = append(l, strings.Join(strings.Fields(s), " "))
			}
		}
		slices.Sort(l)
		return l
	}
	links, err := h.Links(ctx)
	if err != nil {
		return e, err
	}
	for _, l := range links {
		if l == vxDevice || l == "weft0" {
			e.links = append(e.links, l)
		}
	}
	out, err := h.IP(ctx, "route", "show", "proto", "87")
	if err != nil {
		return e, err
	}
	e.routes = lines(out)
	if slices.Contains(e.links, vxDevice) {
		if out, err = h.IP(ctx, "neigh", "show", "dev", vxDevice, "nud", "permanent"); err != nil {
			return e, err
		}
		e.neighs = lines(out)
		if out, err = h.Run(ctx, "bridge", "fdb", "show", "dev", vxDevice); err != nil {
			return e, err
		}
		e.fdb = lines(out)
	}
	if out, err = h.Run(ctx, "nft", "list", "tables"); err != nil {
		return e, err
	}
	for _, t := range lines(out) {
		if strings.HasSuffix(t, " "+vxTable) {
			e.tables = append(e.tables, t)
		}
	}
	return e, nil
}

// peerEntries are the entries a host holds for peer o: its route, its
// neighbour entry and its FDB entry (weft's VTEP MAC, 02:57 + the subnet).
func peerEntries(o *node) (route, neigh, fdb string) {
	a := o.subnet.Addr().As4()
	mac := fmt.Sprintf("02:57:%02x:%02x:%02x:%02x", a[0], a[1], a[2], a[3])
	return fmt.Sprintf("%s via %s dev %s onlink", o.subnet, o.overlay, vxDevice),
		fmt.Sprintf("%s lladdr %s PERMANENT", o.overlay, mac),
		fmt.Sprintf("%s dst %s self permanent", mac, o.underlay)
}

// holdsExactly checks that n's kernel holds one route, one neighbour and
// one FDB entry for each of peers and nothing else: no duplicates, no
// leftovers of a peer that left.
func holdsExactly(ctx context.Context, n *node, peers ...*node) error {
	e, err := readKernel(ctx, n.host)
	if err != nil {
		return err
	}
	var routes, neighs, fdb []string
	for _, o := range peers {
		r, nb, f := peerEntries(o)
		routes, neighs, fdb = append(routes, r), append(neighs, nb), append(fdb, f)
	}
	var bad []string
	for _, c := range []struct {
		what      string
		got, want []string
		contains  bool // got's lines contain want's (routes carry "proto 87" and more)
	}{{"routes", e.routes, routes, true}, {"neighbours", e.neighs, neighs, true}, {"fdb", e.fdb, fdb, true}} {
		if len(c.got) != len(c.want) {
			bad = append(bad, fmt.Sprintf("%d %s, want %d", len(c.got), c.what, len(c.want)))
			continue
		}
		for _, w := range c.want {
			if !slices.ContainsFunc(c.got, func(g string) bool { return strings.Contains(g, w) }) {
				bad = append(bad, fmt.Sprintf("%s lack %q", c.what, w))
			}
		}
	}
	if len(e.tables) != 1 || !slices.Contains(e.links, vxDevice) {
		bad = append(bad, "no weft-vx or no nftables table weft_vx")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s's kernel: %s\n%s", n.name, strings.Join(bad, "; "), e)
	}
	return nil
}

// iperfPairs runs a 2 s iperf3 TCP transfer for each pair (client, server
// to the server's overlay address); every server host must have an
// iperf3 server on 5201 (startIperfServers).
func iperfPairs(t *testing.T, ctx context.Context, pairs [][2]*node) {
	t.Helper()
	for _, p := range pairs {
		res, err := p[0].host.IPerf3Client(ctx, p[1].overlay, netlab.IPerf3Options{Port: 5201, Seconds: 2})
		if err != nil {
			t.Fatalf("iperf3 %s -> %s: %v", p[0].name, p[1].name, err)
		}
		if res.SentBPS <= 0 || res.ReceivedBPS <= 0 {
			t.Fatalf("iperf3 %s -> %s: %v", p[0].name, p[1].name, res)
		}
		t.Logf("iperf3 TCP %s -> %s (2 s): %.0f Mbit/s received, %d retransmits", p[0].name, p[1].name, res.ReceivedBPS/1e6, res.Retransmits)
	}
}

func startIperfServers(t *testing.T, hosts ...*netlab.Host) {
	t.Helper()
	for _, h := range hosts {
		if _, err := h.IPerf3Server(5201); err != nil {
			t.Fatal(err)
		}
	}
}

// datapathIs waits until n's status says it runs mode, with a reason
// containing why.
func datapathIs(n *node, mode, why string) error {
	return pollUntil(time.Now().Add(formationTimeout), func() error {
		st, err := status(n)
		if err != nil {
			return err
		}
		if st.Node.Datapath != mode || !strings.Contains(st.Node.DatapathReason, why) {
			return fmt.Errorf("%s runs the %q data path (%s), want %q (%s)", n.name, st.Node.Datapath, st.Node.DatapathReason, mode, why)
		}
		if (st.Kernel != nil) != (mode == "kernel") {
			return fmt.Errorf("%s's status: kernel section %+v with data path %s", n.name, st.Kernel, mode)
		}
		return nil
	})
}

// metricIs waits until n's metric (with labels) has value want.
func metricIs(ctx context.Context, n *node, want float64, name string, labels ...string) error {
	return pollUntil(time.Now().Add(10*time.Second), func() error {
		m, _, err := metrics(ctx, n)
		if err != nil {
			return err
		}
		if v, ok := m.value(name, labels...); !ok || v != want {
			return fmt.Errorf("%s: %s%v = %v (%v), want %v", n.name, name, labels, v, ok, want)
		}
		return nil
	})
}

// TestKernelDatapath: three hosts on the kernel data path ping and run
// iperf3 in all pairs; a datagram from a host that is no peer is dropped
// and counted (unknown_peer); the watchdog's probe through the kernel path
// keeps systemd fed; kill -9 and a restart adopt what the kernel holds,
// without duplicates; a host that leaves is removed everywhere and takes
// its own entries with it; weft run --cleanup removes a crashed host's.
func TestKernelDatapath(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "a", "b", "c")
	netlab.RequireTools(t, "bridge", "nft", "bash")
	for _, n := range c.nodes {
		n.args = runArgs(n, otherUnderlays(c.nodes, n), strings.Fields(kernelFlags)...)
	}
	x, err := c.lab.Host("x") // on the underlay, not a peer
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Attach(c.seg, netip.MustParsePrefix("192.168.50.100/24")); err != nil {
		t.Fatal(err)
	}
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	for _, n := range c.nodes {
		c.addExtra(n.host, []string{"ip", "-d", "link", "show", vxDevice}, []string{"bridge", "fdb", "show", "dev", vxDevice},
			[]string{"ip", "neigh", "show", "dev", vxDevice}, []string{"nft", "list", "table", "inet", vxTable}, []string{"ip", "-s", "link", "show", vxDevice})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	c.startAll()
	c.waitFormed(formationTimeout)
	for _, n := range c.nodes {
		if err := datapathIs(n, "kernel", "--datapath kernel"); err != nil {
			t.Fatal(err)
		}
		if err := pollUntil(time.Now().Add(10*time.Second), func() error { return holdsExactly(ctx, n, others(c.nodes, n)...) }); err != nil {
			t.Fatal(err)
		}
	}
	if n := pingPairs(t, ctx, false, c.nodes, func(_, _ *node) bool { return true }); n != 6 {
		t.Fatalf("pinged %d pairs, want 6", n)
	}
	startIperfServers(t, a.host, b.host, cc.host)
	iperfPairs(t, ctx, [][2]*node{{a, b}, {b, cc}, {cc, a}})
	for _, n := range c.nodes {
		if err := metricIs(ctx, n, 1, "weft_datapath", "mode", "kernel"); err != nil {
			t.Error(err)
		}
		// The traffic went through the kernel: weft's catch-all saw none of it.
		m, _, err := metrics(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if tx, _ := m.value("weft_tx_bytes_total"); tx < 1e6 {
			t.Errorf("%s: weft_tx_bytes_total %v after iperf3: the VXLAN device's counters do not feed it", n.name, tx)
		}
		if v, _ := m.value("weft_syscalls_total", "op", "sendmmsg"); v != 0 {
			t.Errorf("%s: weft sent datagrams itself (sendmmsg %v)", n.name, v)
		}
	}

	t.Run("a datagram from a host that is no peer is dropped and counted", func(t *testing.T) {
		before, _, err := metrics(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		was, _ := before.value("weft_dropped_packets_total", "reason", "unknown_peer")
		for range 3 {
			if out, err := x.Run(ctx, "bash", "-c", "printf 'not a peer' > /dev/udp/"+a.underlay.String()+"/8472"); err != nil {
				t.Fatalf("sending from x: %v: %s", err, out)
			}
		}
		if err := metricIs(ctx, a, was+3, "weft_dropped_packets_total", "reason", "unknown_peer"); err != nil {
			t.Fatal(err)
		}
		st, err := status(a)
		if err != nil {
			t.Fatal(err)
		}
		if st.Drops["unknown_peer"] < 3 {
			t.Errorf("a's status: drops %v", st.Drops)
		}
	})

	t.Run("kill -9 and a restart leave no duplicates; the watchdog probes the kernel path", func(t *testing.T) {
		if err := b.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := b.proc.Wait(5 * time.Second); err == nil {
			t.Log("b exited")
		}
		left, err := readKernel(ctx, b.host)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(left.links, vxDevice) || len(left.tables) != 1 || len(left.routes) != 2 {
			t.Fatalf("after kill -9 the kernel should still hold b's device, filter and routes:\n%s", left)
		}
		// While b is down its device still carries traffic: a reaches it.
		if err := pingOK(ctx, a, b.overlay, 1); err != nil {
			t.Errorf("a -> b with b's weft killed (the kernel carries on): %v", err)
		}
		ns := listenNotify(t, filepath.Join(c.lab.Dir(), "notify-b.sock"))
		c.startEnv(b, []string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=2000000"})
		if m, err := ns.next(formationTimeout); err != nil || m.text != "READY=1" {
			t.Fatalf("restarted b: first notify %q %v, want READY=1", m.text, err)
		}
		c.waitFormed(formationTimeout)
		for _, n := range c.nodes {
			if err := pollUntil(time.Now().Add(10*time.Second), func() error { return holdsExactly(ctx, n, others(c.nodes, n)...) }); err != nil {
				t.Error(err)
			}
		}
		// With both peers routed, every keep-alive follows a probe as a or
		// c through b's filter and device.
		from := time.Now()
		var wd int
		for time.Since(from) < 3*time.Second {
			m, err := ns.next(3 * time.Second)
			if err != nil {
				break
			}
			if m.text == "WATCHDOG=1" {
				wd++
			}
		}
		if wd < 2 || strings.Contains(b.proc.Logs(), "failed its probe") {
			t.Errorf("restarted b: %d WATCHDOG=1 in 3 s (WATCHDOG_USEC=2s), want >= 2, and no failed probe:\n%s", wd, tail(b.proc.Logs(), 20))
		}
		// A firewall in front of weft's filter drops all VXLAN: the probe
		// cannot pass, and the keep-alives stop until it goes.
		block := [][]string{{"add", "table", "inet", "block"}, {"add", "chain", "inet", "block", "input", "{ type filter hook input priority -10; }"},
			{"add", "rule", "inet", "block", "input", "udp", "dport", "8472", "drop"}}
		for _, cmd := range block {
			if out, err := b.host.Run(ctx, "nft", cmd...); err != nil {
				t.Fatalf("nft %s: %v: %s", strings.Join(cmd, " "), err, out)
			}
		}
		if _, err := waitLogLine(b.proc, 0, time.Now().Add(5*time.Second), "failed its probe"); err != nil {
			t.Errorf("b's probe passed a firewall that drops VXLAN: %v", err)
		}
		for {
			if _, err := ns.next(10 * time.Millisecond); err != nil {
				break // drain what came before the firewall
			}
		}
		if m, err := ns.next(2500 * time.Millisecond); err == nil {
			t.Errorf("with VXLAN dropped, b still told systemd %q", m.text)
		}
		if out, err := b.host.Run(ctx, "nft", "delete", "table", "inet", "block"); err != nil {
			t.Fatalf("nft delete table inet block: %v: %s", err, out)
		}
		if m, err := ns.next(3 * time.Second); err != nil || m.text != "WATCHDOG=1" {
			t.Errorf("with the firewall gone: %q %v, want WATCHDOG=1 again", m.text, err)
		}
		pingPairs(t, ctx, false, c.nodes, func(s, d *node) bool { return s == b || d == b })
	})

	t.Run("a host that leaves is removed everywhere, and takes its own entries", func(t *testing.T) {
		stopNode(t, cc)
		for _, n := range []*node{a, b} {
			if err := pollUntil(time.Now().Add(15*time.Second), func() error { return holdsExactly(ctx, n, others([]*node{a, b}, n)...) }); err != nil {
				t.Error(err)
			}
		}
		e, err := readKernel(ctx, cc.host)
		if err != nil {
			t.Fatal(err)
		}
		if !e.empty() {
			t.Errorf("c stopped but its kernel still holds:\n%s", e)
		}
	})

	t.Run("weft run --cleanup removes what a crashed run left", func(t *testing.T) {
		if err := a.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = a.proc.Wait(5 * time.Second)
		if e, err := readKernel(ctx, a.host); err != nil || e.empty() {
			t.Fatalf("after kill -9 a's kernel holds nothing (%v)?\n%s", err, e)
		}
		code, _, stderr := runWeft(t, a, "run", "--cleanup")
		if code != 0 {
			t.Fatalf("weft run --cleanup: exit %d\n%s", code, stderr)
		}
		e, err := readKernel(ctx, a.host)
		if err != nil {
			t.Fatal(err)
		}
		if !e.empty() {
			t.Errorf("after weft run --cleanup a's kernel still holds:\n%s", e)
		}
		if code, _, stderr := runWeft(t, a, "run", "--cleanup"); code != 0 {
			t.Errorf("weft run --cleanup with nothing to do: exit %d\n%s", code, stderr)
		}
	})
}

// others are nodes but n.
func others(nodes []*node, n *node) []*node {
	return slices.DeleteFunc(slices.Clone(nodes), func(o *node) bool { return o == n })
}

// TestKernelDatapathMixed: a host on the kernel path, one that chose it
// (--datapath auto), one on the userspace path, and a kernel VTEP that is
// every weft host's static peer (flannel-style, no weft) carry traffic in
// every pair: one VXLAN wire format, one VTEP MAC derivation.
func TestKernelDatapathMixed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "a", "b", "c")
	netlab.RequireTools(t, "bridge", "nft", "ethtool")
	kAddr := netip.MustParseAddr("192.168.50.9")
	static := "name=k,subnet=10.244.9.0/24,ip=192.168.50.9,mac=" + kernelVTEPMAC
	a, b, cc := c.by["a"], c.by["b"], c.by["c"]
	modes := map[*node]string{a: "kernel", b: "auto", cc: "userspace"}
	for _, n := range c.nodes {
		n.args = runArgs(n, otherUnderlays(c.nodes, n), "--encap", "vxlan", "--datapath", modes[n], "--peer", static)
	}
	k, err := c.lab.Host("k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Attach(c.seg, netip.PrefixFrom(kAddr, 24)); err != nil {
		t.Fatal(err)
	}
	c.addExtra(k, []string{"ip", "-d", "link", "show", "vxlan0"}, []string{"bridge", "fdb", "show", "dev", "vxlan0"}, []string{"ip", "neigh", "show", "dev", "vxlan0"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	setup := [][]string{
		{"ip", "link", "add", "vxlan0", "type", "vxlan", "id", "1", "dstport", "8472", "local", kAddr.String(), "dev", "eth0", "nolearning"},
		{"ip", "link", "set", "vxlan0", "address", kernelVTEPMAC, "mtu", "1450", "up"},
		{"ip", "addr", "add", "10.244.9.0/32", "dev", "vxlan0"},
	}
	for _, n := range c.nodes {
		_, neigh, _ := peerEntries(n)
		mac := strings.Fields(neigh)[2]
		setup = append(setup,
			[]string{"ip", "route", "add", n.subnet.String(), "via", n.overlay.String(), "dev", "vxlan0", "onlink"},
			[]string{"ip", "neigh", "add", n.overlay.String(), "lladdr", mac, "dev", "vxlan0", "nud", "permanent"},
			[]string{"bridge", "fdb", "append", mac, "dev", "vxlan0", "dst", n.underlay.String()})
	}
	for _, cmd := range setup {
		if out, err := k.Run(ctx, cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("on k: %s: %v: %s", strings.Join(cmd, " "), err, out)
		}
	}
	// A kernel VTEP hands the veth its inner TCP checksums unfinished
	// (see vxlanInterop): the userspace host c would see them bad. They
	// are finished in software on every kernel sender: k, a and b.
	for _, h := range []*netlab.Host{k, a.host, b.host} {
		if out, err := h.Run(ctx, "ethtool", "-K", "eth0", "tx", "off"); err != nil {
			t.Fatalf("on %s: ethtool -K eth0 tx off: %v: %s", h.Name(), err, out)
		}
	}

	c.startAll()
	c.waitFormed(formationTimeout)
	for n, want := range map[*node][2]string{a: {"kernel", "--datapath kernel"}, b: {"kernel", "--datapath auto: plaintext VXLAN"}, cc: {"userspace", "--datapath userspace"}} {
		if err := datapathIs(n, want[0], want[1]); err != nil {
			t.Fatal(err)
		}
	}
	kNode := &node{name: "k", host: k, overlay: netip.MustParseAddr("10.244.9.0")}
	all := append(slices.Clone(c.nodes), kNode)
	if n := pingPairs(t, ctx, false, all, func(_, _ *node) bool { return true }); n != 12 {
		t.Fatalf("pinged %d pairs, want 12", n)
	}
	startIperfServers(t, a.host, b.host, cc.host)
	iperfPairs(t, ctx, [][2]*node{{a, cc}, {cc, b}, {b, a}, {kNode, a}})
	for _, n := range []*node{a, b} {
		st, err := status(n)
		if err != nil {
			t.Fatal(err)
		}
		if p := st.Peer("k"); p == nil || p.Via != "tunnel" || st.Kernel == nil || !slices.Contains(st.Kernel.FilterPeers, kAddr.String()) {
			t.Errorf("%s's status of the static peer k: %+v, kernel %+v", n.name, p, st.Kernel)
		}
	}
}

// TestKernelCNI: containers on hosts that run the kernel data path, added
// by weft's CNI plugin, reach each other across hosts, and both hosts'
// overlay addresses; TCP flows between them; DEL takes them out.
func TestKernelCNI(t *testing.T) {
	t.Parallel()
	c := newCluster(t, "a", "b")
	e := findCNIEnv(t, c.lab.Dir())
	for _, n := range c.nodes {
		n.args = runArgs(n, otherUnderlays(c.nodes, n), strings.Fields(kernelFlags)...)
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	for _, n := range c.nodes {
		if err := datapathIs(n, "kernel", "--datapath kernel"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var cts []*container
	for _, n := range c.nodes {
		cts = append(cts, addContainer(t, ctx, c, e, newCNIHost(t, c, n), n.name+"c1", cniNet))
	}
	pingContainers(t, ctx, cts, func(src *container) []netip.Addr {
		dsts := []netip.Addr{src.h.n.overlay}
		for _, o := range cts {
			if o != src {
				dsts = append(dsts, o.ip, o.h.n.overlay)
			}
		}
		return dsts
	})
	iperfCheck(t, ctx, cts[0].ns, cts[1].ns, cts[1].ip, "container ac1 -> bc1 (kernel data path)")
	for _, ct := range cts {
		if _, err := ct.h.cnitool(ctx, e, "del", cniNet, ct.path); err != nil {
			t.Errorf("cnitool del %s: %v", ct.name, err)
		}
	}
}
