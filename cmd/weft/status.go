package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/router"
)

// printStatus writes the report as a readable table.
func printStatus(w io.Writer, r node.Status) {
	n := r.Node
	fmt.Fprintf(w, "node      %s (%s)\n", n.Name, readyWord(n.Ready))
	fmt.Fprintf(w, "subnet    %s of %s, address %s on %s, MTU %d\n", n.Subnet, n.Network, n.Address, n.TUN, n.MTU)
	if n.Subnet6 != "" {
		fmt.Fprintf(w, "subnet6   %s of %s, address %s\n", n.Subnet6, n.Network6, n.Address6)
	}
	fmt.Fprintf(w, "underlay  %s on %s, encap %s", n.Underlay, n.Iface, n.Encap)
	if n.VTEPMAC != "" {
		fmt.Fprintf(w, " (VNI %d, VTEP MAC %s)", n.VNI, n.VTEPMAC)
	}
	fmt.Fprintf(w, "\n")
	if n.Datapath != "" {
		fmt.Fprintf(w, "datapath  %s (%s)\n", n.Datapath, n.DatapathReason)
	}
	fmt.Fprintf(w, "uptime    %s, version %s\n", time.Duration(n.UptimeSeconds*float64(time.Second)), n.Version)
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
	if e := n.Encryption; e != nil {
		fmt.Fprintf(w, "encrypt   %s, key %s, handshakes %d completed %d answered\n", e.Cipher, e.PublicKey, e.Handshakes["completed"], e.Handshakes["responded"])
	}
	if c := n.Cert; c != nil {
		fmt.Fprintf(w, "cert      %s, serial %s, until %s, grants %s; CAs %s\n", c.Name, c.Serial, c.NotAfter.UTC().Format(time.RFC3339),
			strings.Join(c.Grants, " "), strings.Join(c.CAs, ", "))
	}
	fmt.Fprintf(w, "traffic   tx %d packets %s, rx %d packets %s\n\n", r.Totals.TxPackets, bytesHuman(r.Totals.TxBytes), r.Totals.RxPackets, bytesHuman(r.Totals.RxBytes))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSUBNET\tUNDERLAY\tSTATE\tVIA\tLAST SEEN\tTX\tRX\tNOTE")
	for _, p := range r.Peers {
		seen := "-"
		if !p.LastSeen.IsZero() {
			seen = time.Since(p.LastSeen).Round(time.Second).String() + " ago"
		}
		subnet := p.Subnet
		if p.Subnet6 != "" {
			subnet += "," + p.Subnet6
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, subnet, p.Underlay, p.State, p.Via, seen,
			bytesHuman(p.TxBytes), bytesHuman(p.RxBytes), peerNote(p))
	}
	tw.Flush()
	if len(r.Peers) == 0 {
		fmt.Fprintln(w, "(no peers yet)")
	}
	printKernel(w, r.Kernel)
	printBGP(w, r.BGP)
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

// printKernel shows the kernel data path's VXLAN device and its entries,
// as the kernel holds them.
func printKernel(w io.Writer, k *node.KernelStatus) {
	if k == nil {
		return
	}
	fmt.Fprintf(w, "\nkernel    VXLAN device %s (index %d), accepting VXLAN from %s\n", k.Device, k.Index, orNone(strings.Join(k.FilterPeers, ", ")))
	for _, l := range [][]string{k.Routes, k.Neighbors, k.FDB} {
		for _, e := range l {
			fmt.Fprintf(w, "          %s\n", e)
		}
	}
	if k.Error != "" {
		fmt.Fprintf(w, "error     %s\n", k.Error)
	}
}

// printBGP shows the BGP speaker's neighbours and what it announces.
func printBGP(w io.Writer, b *node.BGPStatus) {
	if b == nil {
		return
	}
	fmt.Fprintf(w, "\nbgp       AS %d, router ID %s, announcing %s\n", b.ASN, b.RouterID, orNone(strings.Join(b.Announced, ", ")))
	for _, r := range b.ClusterRoute {
		fmt.Fprintf(w, "route     %s\n", r)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NEIGHBOR\tAS\tSTATE\tUPTIME\tSENT\tRECEIVED\tLAST ERROR")
	for _, n := range b.Neighbors {
		up := "-"
		if n.Up() {
			up = time.Duration(n.UptimeSeconds * float64(time.Second)).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", n.Addr, n.ASN, n.State, up, n.Sent, n.Received, n.LastError)
	}
	tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// peerNote is why a peer is not routed, or else its encryption session.
func peerNote(p router.PeerStatus) string {
	if p.Reason != "" || p.Encryption == nil {
		return p.Reason
	}
	e := p.Encryption
	if e.Session == "established" {
		return fmt.Sprintf("encrypted, session %s old", time.Duration(e.SessionAgeSeconds*float64(time.Second)).Round(time.Second))
	}
	return "encrypted, session " + e.Session
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
