package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/node"
)

func (n *daemon_) report() node.Status {
	n.mu.Lock()
	s, l := n.s, n.local
	n.mu.Unlock()
	ns := node.NodeStatus{
		Name: s.Name, Network: s.Network.String(), Subnet: l.Subnet.String(), Address: l.Addr.String(), AutoSubnet: s.AutoSubnet,
		Underlay: netip.AddrPortFrom(n.getUnderlay().Addr, s.Port).String(), Iface: n.getUnderlay().Iface,
		Encap: s.Encap.String(), TUN: s.TUN, MTU: n.mtu, Version: version, Ready: n.ready.Load(),
		Started: n.started, UptimeSeconds: time.Since(n.started).Round(time.Second).Seconds(),
	}
	if s.Encap.HeaderLen() > 0 {
		ns.VNI, ns.VTEPMAC = s.VNI, l.MAC.String()
	}
	if n.conn != nil {
		ns.Offloads = map[string]bool{"udp_gso": n.conn.GSO(), "udp_gro": n.conn.GRO(), "tun_vnet_hdr": n.dev.VNetHdr()}
	}
	if c := n.gossip(); c != nil {
		ns.GossipHealth = c.Health()
	}
	return node.Status{Node: ns, Peers: n.rt.Status(), Drops: n.rt.Drops(), Totals: n.rt.Totals()}
}

func (n *daemon_) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(n.report())
}

// claimSocket makes sure no other weft serves on path and clears a stale
// socket file a crashed run left.
func claimSocket(path string) error {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another weft is running: its control socket %s answers (stop it, or give this one its own --socket and --tun)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	return nil
}

func (n *daemon_) serveControl() error {
	ln, err := net.Listen("unix", n.s.Socket)
	if err != nil {
		return fmt.Errorf("control socket --socket %s: %w", n.s.Socket, err)
	}
	if err := os.Chmod(n.s.Socket, 0o660); err != nil {
		ln.Close()
		return fmt.Errorf("control socket permissions: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	n.onStop(func() {
		_ = srv.Close()
		_ = os.Remove(n.s.Socket)
	})
	return nil
}

// printStatus writes the report as a readable table.
func printStatus(w io.Writer, r node.Status) {
	n := r.Node
	fmt.Fprintf(w, "node      %s (%s)\n", n.Name, readyWord(n.Ready))
	fmt.Fprintf(w, "subnet    %s of %s, address %s on %s, MTU %d\n", n.Subnet, n.Network, n.Address, n.TUN, n.MTU)
	fmt.Fprintf(w, "underlay  %s on %s, encap %s", n.Underlay, n.Iface, n.Encap)
	if n.VTEPMAC != "" {
		fmt.Fprintf(w, " (VNI %d, VTEP MAC %s)", n.VNI, n.VTEPMAC)
	}
	fmt.Fprintf(w, "\nuptime    %s, version %s\n", time.Duration(n.UptimeSeconds*float64(time.Second)), n.Version)
	if len(n.Offloads) > 0 {
		var on []string
		for k, v := range n.Offloads {
			if v {
				on = append(on, k)
			}
		}
		sort.Strings(on)
		fmt.Fprintf(w, "offloads  %s\n", strings.Join(on, " "))
	}
	fmt.Fprintf(w, "traffic   tx %d packets %s, rx %d packets %s\n\n", r.Totals.TxPackets, bytesHuman(r.Totals.TxBytes), r.Totals.RxPackets, bytesHuman(r.Totals.RxBytes))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSUBNET\tUNDERLAY\tSTATE\tVIA\tLAST SEEN\tTX\tRX\tNOTE")
	for _, p := range r.Peers {
		seen := "-"
		if !p.LastSeen.IsZero() {
			seen = time.Since(p.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Subnet, p.Underlay, p.State, p.Via, seen,
			bytesHuman(p.TxBytes), bytesHuman(p.RxBytes), p.Reason)
	}
	tw.Flush()
	if len(r.Peers) == 0 {
		fmt.Fprintln(w, "(no peers yet)")
	}
	var drops []string
	for k, v := range r.Drops {
		if v > 0 {
			drops = append(drops, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(drops)
	if len(drops) == 0 {
		drops = []string{"none"}
	}
	fmt.Fprintf(w, "\ndrops     %s\n", strings.Join(drops, " "))
}

func readyWord(ok bool) string {
	if ok {
		return "ready"
	}
	return "starting"
}

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
