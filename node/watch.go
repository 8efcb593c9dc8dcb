package node

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/router"
)

// watchdog tells the service manager the node is alive, every interval,
// only once a probe has gone through both forwarding loops and the gossip
// answers. A stuck loop or a dead memberlist stops the pings, and systemd
// restarts us.
func (n *Node) watchdog(ctx context.Context, interval time.Duration) {
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
		dst := netip.AddrPortFrom(lastAddr(family.First(n.getLocal().Subnets)), router.ProbePort)
		_, errOut := out.WriteToUDPAddrPort(payload, dst)
		inbound := n.dp.Tunnel()
		if inbound {
			_, _ = in.WriteToUDPAddrPort(payload, loop)
		}
		alive := errOut == nil && n.dp.WaitProbes(nonce, inbound, interval/2)
		gossip := n.gossip().Running()
		if alive && gossip {
			n.d.Notify("WATCHDOG=1")
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
func (n *Node) probeSocket() (*net.UDPConn, error) {
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
	if family.First(n.s.Networks).Addr().Is6() {
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
func (n *Node) reportDrops(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := map[string]uint64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := n.dp.Drops()
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
