package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/router"
)

// reload re-reads the configuration (SIGHUP). What can change without
// dropping traffic (log level and format, static peers, join list, gossip
// keys) takes effect; a change that needs a restart is refused with a clear
// log line, and the old configuration keeps running.
func (n *daemon_) reload() {
	_, _ = daemon.SdNotify(false, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	defer daemon.SdNotify(false, daemon.SdNotifyReady) //nolint:errcheck // best effort
	next, _, _, err := parseRun(n.args, io.Discard)
	if err != nil {
		n.log.Error("reload refused: the configuration is invalid; keeping the running one", "err", err)
		return
	}
	if fixed := restartOnly(n.s, next); len(fixed) > 0 {
		n.log.Error("reload refused: these settings need a restart; keeping the running configuration", "changed", strings.Join(fixed, ", "))
		return
	}
	var changed []string
	if next.LogLevel != n.s.LogLevel || next.LogFormat != n.s.LogFormat {
		n.logs.set(next.LogFormat, next.LogLevel)
		changed = append(changed, "logLevel/logFormat")
	}
	if !slices.Equal(next.Join, n.s.Join) {
		if err := n.gossip().SetSeeds(next.Join); err != nil {
			n.log.Error("reload: join list", "err", err)
			next.Join = n.s.Join
		} else {
			changed = append(changed, "join")
		}
	}
	if !reflect.DeepEqual(next.GossipKeys, n.s.GossipKeys) {
		var key []byte
		var extra [][]byte
		if len(next.GossipKeys) > 0 {
			key, extra = next.GossipKeys[0], next.GossipKeys[1:]
		}
		if err := n.gossip().SetKeys(key, extra); err != nil {
			n.log.Error("reload: gossip keys", "err", err)
			next.GossipKeys = n.s.GossipKeys
		} else {
			changed = append(changed, "gossip keys")
		}
	}
	peersChanged := !reflect.DeepEqual(next.Peers, n.s.Peers)
	// Only the reloadable fields change; restartOnly made sure the rest are
	// equal, and other goroutines read them without the lock.
	n.mu.Lock()
	n.s.LogLevel, n.s.LogFormat = next.LogLevel, next.LogFormat
	n.s.Join, n.s.GossipKeys, n.s.Peers = next.Join, next.GossipKeys, next.Peers
	n.mu.Unlock()
	if peersChanged {
		n.syncPeers()
		changed = append(changed, "peers")
	}
	if len(changed) == 0 {
		n.log.Info("configuration reloaded: nothing changed")
		return
	}
	n.log.Info("configuration reloaded", "changed", strings.Join(changed, ", "))
}

// restartOnly lists the settings that differ between a and b but cannot
// change while running.
func restartOnly(a, b Settings) []string {
	var out []string
	check := func(name string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, name)
		}
	}
	check("name", a.Name, b.Name)
	check("network", a.Network, b.Network)
	check("subnet", a.Subnet, b.Subnet)
	check("subnetLen/subnetMin/subnetMax", a.Pool, b.Pool)
	check("publicIp", a.PublicIP, b.PublicIP)
	check("iface", a.Iface, b.Iface)
	check("port", a.Port, b.Port)
	check("encap", a.Encap, b.Encap)
	check("vni", a.VNI, b.VNI)
	check("vtepMac", a.VTEPMAC, b.VTEPMAC)
	check("gossipPort", a.GossipPort, b.GossipPort)
	check("tun", a.TUN, b.TUN)
	check("mtu", a.MTU, b.MTU)
	check("metricsAddr", a.MetricsAddr, b.MetricsAddr)
	check("socket", a.Socket, b.Socket)
	check("directRouting", a.DirectRouting, b.DirectRouting)
	check("offload", a.Offload, b.Offload)
	check("perPeerMetrics", a.PerPeerMetrics, b.PerPeerMetrics)
	check("pprof", a.PProf, b.PProf)
	check("stateDir", a.StateDir, b.StateDir)
	check("subnetFile", a.SubnetFile, b.SubnetFile)
	check("flannelCompat", a.FlannelCompat, b.FlannelCompat)
	check("subnetReclaim", a.SubnetReclaim, b.SubnetReclaim)
	check("gossipKeyFile (turning encryption on or off)", len(a.GossipKeys) > 0, len(b.GossipKeys) > 0)
	return out
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}

// watchdog tells systemd the daemon is alive, every interval, only once a
// probe has gone through both forwarding loops and the gossip answers. A
// stuck loop or a dead memberlist stops the pings, and systemd restarts us.
func (n *daemon_) watchdog(ctx context.Context, interval time.Duration) {
	out, err := n.probeSocket()
	if err != nil {
		n.log.Error("watchdog: cannot open the probe socket; not notifying systemd", "err", err)
		return
	}
	defer out.Close()
	in, err := net.ListenUDP("udp", nil)
	if err != nil {
		n.log.Error("watchdog: cannot open the probe socket; not notifying systemd", "err", err)
		return
	}
	defer in.Close()
	loop := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), n.s.Port)
	if n.getUnderlay().Addr.Is6() {
		loop = netip.AddrPortFrom(netip.IPv6Loopback(), n.s.Port)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var nonce uint64
	for {
		nonce++
		payload := router.ProbePayload(nonce)
		dst := netip.AddrPortFrom(lastAddr(n.getLocal().Subnet), router.ProbePort)
		_, errOut := out.WriteToUDPAddrPort(payload, dst)
		inbound := n.conn != nil
		if inbound {
			_, _ = in.WriteToUDPAddrPort(payload, loop)
		}
		alive := errOut == nil && n.rt.WaitProbes(nonce, inbound, interval/2)
		gossip := n.gossip().Running()
		if alive && gossip {
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		} else {
			n.log.Error("watchdog: not notifying systemd", "data_path_alive", alive, "gossip_running", gossip, "probe_err", errOut)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probeSocket is a UDP socket bound to the TUN device, so that what it
// sends enters the outbound forwarding loop whatever the routes say.
func (n *daemon_) probeSocket() (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, n.s.TUN)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	network := "udp4"
	if n.s.Network.Addr().Is6() {
		network = "udp6"
	}
	pc, err := lc.ListenPacket(context.Background(), network, "")
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// reportDrops logs, at most once per interval, how many packets were dropped
// and why: a flood of bad datagrams is counted, never logged per packet.
func (n *daemon_) reportDrops(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := map[string]uint64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := n.rt.Drops()
		var attrs []any
		for _, k := range slices.Sorted(maps.Keys(cur)) {
			if d := cur[k] - prev[k]; d > 0 {
				attrs = append(attrs, k, d)
			}
		}
		prev = cur
		if len(attrs) > 0 {
			n.log.Warn("packets dropped in the last interval", append([]any{"interval", interval}, attrs...)...)
		}
	}
}

func mkdirFor(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("directory for %s: %w", path, err)
	}
	return nil
}

// writeSubnetFile writes the file other tools read (flannel's subnet.env),
// atomically.
func (n *daemon_) writeSubnetFile() error {
	l := n.getLocal()
	var b strings.Builder
	fmt.Fprintf(&b, "WEFT_NETWORK=%s\nWEFT_SUBNET=%s\nWEFT_ADDRESS=%s\nWEFT_MTU=%d\nWEFT_ENCAP=%s\n",
		n.s.Network, l.Subnet, l.Addr, n.mtu, n.s.Encap)
	if n.s.FlannelCompat {
		// flannel writes the subnet's first host address: the CNI bridge's.
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=%d\nFLANNEL_IPMASQ=false\n",
			n.s.Network, netip.PrefixFrom(l.Subnet.Addr().Next(), l.Subnet.Bits()), n.mtu)
	}
	if err := mkdirFor(n.s.SubnetFile); err != nil {
		return err
	}
	if err := lease.WriteFileAtomic(n.s.SubnetFile, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("subnet file --subnet-file: %w", err)
	}
	return nil
}

// switchHandler is a slog.Handler whose format and level can change at run
// time (on reload); loggers derived with With keep working.
type switchHandler struct {
	w     io.Writer
	level *slog.LevelVar
	base  *atomic.Pointer[slog.Handler]
	attrs []slog.Attr
	group string
}

func newSwitchHandler(w io.Writer, format string, level slog.Level) *switchHandler {
	h := &switchHandler{w: w, level: new(slog.LevelVar), base: new(atomic.Pointer[slog.Handler])}
	h.set(format, level)
	return h
}

func (h *switchHandler) set(format string, level slog.Level) {
	h.level.Set(level)
	opts := &slog.HandlerOptions{Level: h.level}
	var base slog.Handler = slog.NewTextHandler(h.w, opts)
	if format == "json" {
		base = slog.NewJSONHandler(h.w, opts)
	}
	h.base.Store(&base)
}

func (h *switchHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	base := *h.base.Load()
	if h.group != "" {
		base = base.WithGroup(h.group)
	}
	if len(h.attrs) > 0 {
		base = base.WithAttrs(h.attrs)
	}
	return base.Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clip(h.attrs), attrs...)
	return &c
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}
