package router

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/fakes"
)

// What a data path beside the router counts (Config.Beside) is added to
// the router's own counts, in Totals, Drops and the metrics alike.
func TestBesideCountsAdded(t *testing.T) {
	beside := Counts{
		Totals: Totals{TxPackets: 10, TxBytes: 1000, RxPackets: 20, RxBytes: 2000},
		Drops:  map[DropReason]uint64{DropUnknownPeer: 3, DropSpoofed: 2, numDropReasons + 1: 99}, // an unknown reason is ignored
	}
	for _, tc := range []struct {
		name   string
		beside func() Counts
		want   Totals
		drops  map[string]uint64
	}{
		{"without", nil, Totals{TxPackets: 1, TxBytes: 32}, map[string]uint64{"no_route": 1}},
		{"with", func() Counts { return beside }, Totals{TxPackets: 11, TxBytes: 1032, RxPackets: 20, RxBytes: 2000},
			map[string]uint64{"no_route": 1, "unknown_peer": 3, "spoofed": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(encap.UDP)
			cfg.Beside = tc.beside
			dev, conn := fakes.NewDevice(false), fakes.NewSocket(false)
			r := New(cfg, Worker{Dev: dev, In: conn, Out: conn})
			r.SetPeers(testPeers())
			// The router's own: one packet sent to b, one without a route.
			s := r.w(0).newOutbound()
			for i, p := range [][]byte{ipv4("10.244.1.5", "10.244.2.7", 32), ipv4("10.244.1.5", "10.244.99.7", 32)} {
				s.sizes[i] = copy(s.bufs[i][encap.Headroom:], p)
			}
			r.w(0).forwardOut(s, 2)

			if got := r.Totals(); got != tc.want {
				t.Errorf("Totals %+v, want %+v", got, tc.want)
			}
			drops := r.Drops()
			for reason, n := range drops {
				if n != tc.drops[reason] {
					t.Errorf("Drops[%s] = %d, want %d", reason, n, tc.drops[reason])
				}
			}
			if len(drops) != len(DropReasons()) {
				t.Errorf("Drops has %d reasons, want %d", len(drops), len(DropReasons()))
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(r)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					switch mf.GetName() {
					case "weft_tx_packets_total", "weft_rx_bytes_total":
						got[mf.GetName()] = m.GetCounter().GetValue()
					case "weft_dropped_packets_total":
						got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
					}
				}
			}
			if got["weft_tx_packets_total"] != float64(tc.want.TxPackets) || got["weft_rx_bytes_total"] != float64(tc.want.RxBytes) ||
				got["unknown_peer"] != float64(tc.drops["unknown_peer"]) || got["no_route"] != 1 {
				t.Errorf("metrics %v, want totals %+v and drops %v", got, tc.want, tc.drops)
			}
		})
	}
}
