package router

import "github.com/prometheus/client_golang/prometheus"

var (
	descTxPackets = prometheus.NewDesc("weft_tx_packets_total", "Inner packets sent into the tunnel.", nil, nil)
	descTxBytes   = prometheus.NewDesc("weft_tx_bytes_total", "Bytes of inner packets sent into the tunnel.", nil, nil)
	descRxPackets = prometheus.NewDesc("weft_rx_packets_total", "Inner packets received from the tunnel and written to the TUN device.", nil, nil)
	descRxBytes   = prometheus.NewDesc("weft_rx_bytes_total", "Bytes of inner packets received from the tunnel and written to the TUN device.", nil, nil)
	descDropped   = prometheus.NewDesc("weft_dropped_packets_total", "Packets dropped, by reason.", []string{"reason"}, nil)
	descPeers     = prometheus.NewDesc("weft_peers", "Peers known, by state.", []string{"state"}, nil)
	descRoutes    = prometheus.NewDesc("weft_routes", "Peers by how they are reached: tunnel, direct (kernel route), or none (host-gw cannot reach a peer that is not on-link).", []string{"kind"}, nil)
	descConflicts = prometheus.NewDesc("weft_subnet_conflicts_total", "Subnet conflicts detected (a peer refused a route because its subnet overlaps one claimed earlier).", nil, nil)
	descRefused   = prometheus.NewDesc("weft_peers_refused", "Peers known but refused a route, by reason: invalid_metadata, encap (another encapsulation or VNI), network (another cluster network), subnet_outside_network, claim_time (a claim dated in the future or before weft existed), underlay_conflict (an underlay address another peer has), subnet_conflict, and with --encrypt no_key, cipher; encrypts (it encrypts, we do not).", []string{"reason"}, nil)
	descTUNGRO    = prometheus.NewDesc("weft_tun_gro_fallback", "1 if the TUN device refused coalesced writes (when probed at start-up, or later) and weft writes one packet per call.", nil, nil)

	descPeerTxPackets = prometheus.NewDesc("weft_peer_tx_packets_total", "Inner packets sent to a peer.", []string{"peer"}, nil)
	descPeerTxBytes   = prometheus.NewDesc("weft_peer_tx_bytes_total", "Inner bytes sent to a peer.", []string{"peer"}, nil)
	descPeerRxPackets = prometheus.NewDesc("weft_peer_rx_packets_total", "Inner packets received from a peer.", []string{"peer"}, nil)
	descPeerRxBytes   = prometheus.NewDesc("weft_peer_rx_bytes_total", "Inner bytes received from a peer.", []string{"peer"}, nil)
)

// PeerStates are the label values of weft_peers ("pending": a gossip
// member whose certificate has not arrived yet, node/pki.go).
var PeerStates = []string{"alive", "suspect", "dead", "left", "static", "pending"}

// Describe implements prometheus.Collector.
func (r *Router) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTxPackets, descTxBytes, descRxPackets, descRxBytes, descDropped, descPeers, descRoutes, descConflicts, descRefused, descTUNGRO} {
		ch <- d
	}
	if r.cfg.PerPeerMetrics {
		for _, d := range []*prometheus.Desc{descPeerTxPackets, descPeerTxBytes, descPeerRxPackets, descPeerRxBytes} {
			ch <- d
		}
	}
	r.txBatch.Describe(ch)
	r.rxBatch.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Router) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	tot := r.Totals()
	counter(descTxPackets, tot.TxPackets)
	counter(descTxBytes, tot.TxBytes)
	counter(descRxPackets, tot.RxPackets)
	counter(descRxBytes, tot.RxBytes)
	for i, n := range r.dropCounts() {
		counter(descDropped, n, DropReason(i).String())
	}
	counter(descConflicts, r.conflCnt.Load())
	var fallback float64
	if r.workers[0].Dev.WriteFallback() {
		fallback = 1
	}
	gauge(descTUNGRO, fallback)
	r.txBatch.Collect(ch)
	r.rxBatch.Collect(ch)

	r.mu.Lock()
	byState := map[string]int{}
	for _, p := range r.peers {
		byState[p.State]++
	}
	byVia := map[Via]int{}
	for _, v := range r.viaOf {
		byVia[v]++
	}
	var byRefusal [numRefusals]int
	for _, why := range r.refused {
		if why < numRefusals {
			byRefusal[why]++
		}
	}
	type peerCounts struct {
		name               string
		txp, txb, rxp, rxb uint64
	}
	var pcs []peerCounts
	if r.cfg.PerPeerMetrics {
		for name, st := range r.stats {
			pcs = append(pcs, peerCounts{name, st.txPackets.Load(), st.txBytes.Load(), st.rxPackets.Load(), st.rxBytes.Load()})
		}
	}
	r.mu.Unlock()
	for _, s := range PeerStates {
		gauge(descPeers, float64(byState[s]), s)
	}
	gauge(descRoutes, float64(byVia[ViaTunnel]), string(ViaTunnel))
	gauge(descRoutes, float64(byVia[ViaDirect]), string(ViaDirect))
	gauge(descRoutes, float64(byVia[ViaNone]), string(ViaNone))
	for why := RefusedNone + 1; why < numRefusals; why++ {
		gauge(descRefused, float64(byRefusal[why]), why.String())
	}
	for _, pc := range pcs {
		counter(descPeerTxPackets, pc.txp, pc.name)
		counter(descPeerTxBytes, pc.txb, pc.name)
		counter(descPeerRxPackets, pc.rxp, pc.name)
		counter(descPeerRxBytes, pc.rxb, pc.name)
	}
}

// TUNSyscalls returns how many TUN reads and writes the loops made.
func (r *Router) TUNSyscalls() (reads, writes uint64) {
	return r.ctr.tunReads.Load(), r.ctr.tunWrites.Load()
}
