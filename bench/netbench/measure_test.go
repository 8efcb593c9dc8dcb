package main

import (
	"strings"
	"testing"
)

func TestUDPSocketDrops(t *testing.T) {
	// /proc/net/udp with two reuseport sockets on 8285 (0x205D) and one
	// on 5201 (0x1451).
	table := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 0200A8C0:205D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41234 2 0000000000000000 17
  121: 0200A8C0:205D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41235 2 0000000000000000 3
  305: 00000000:1451 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 51234 2 0000000000000000 0
  bad line
`
	d := udpSocketDrops(table)
	if len(d) != 2 || d[8285] != 20 || d[5201] != 0 {
		t.Fatalf("got %v, want 8285:20 5201:0", d)
	}
}

// TestTableEveryColumn fills every column of the results table, so that a
// column added to the header but not to the rows (or the other way) shows.
func TestTableEveryColumn(t *testing.T) {
	one := 1.0
	p := &pathResult{
		Name: "weft-udp", OK: true,
		TCP1:      &tcpStat{Streams: 1, MedianBPS: 9.4e9, Reps: []tcpRep{{}}, BusyCores: 1.55, GbpsPerBusyCore: 6.05, CPU: &machineCPU{StealCores: 0.01}},
		TCP4:      &tcpStat{Streams: 4, MedianBPS: 13e9, Reps: []tcpRep{{}}},
		TCP8:      &tcpStat{Streams: 8, MedianBPS: 12e9, Reps: []tcpRep{{}}},
		UDP:       &udpStat{DeliveredPPS: 189e3, LossPercent: 81, Reps: []udpRep{{}}},
		UDPBigBuf: &udpStat{DeliveredPPS: 378e3, LossPercent: 63, Reps: []udpRep{{}}},
		Ping:      &pingStat{AvgMs: 0.534},
		Echo:      &pingStat{AvgMs: 0.293},
		Daemons:   []*daemonStat{{CPUSeconds: 39, PeakRSSMiB: 43.6}, {CPUSeconds: 29, PeakRSSMiB: 33.1}},
		Ratio:     &ratios{TCP1: &one, TCP4: &one, TCP8: &one, UDP64: &one, PerCore: &one},
	}
	r := &results{Options: options{UDPLen: 64, UDPRcvbuf: "4M"}, Paths: []*pathResult{p}}
	tab := r.table()
	for _, want := range []string{"UDP64, 4M rcvbuf", "378.0 (63%)", "0.534 (0.293)", "1.55 (0.01)", "6.05", "39.00 / 29.00", "43.6 / 33.1", "1.00 / 1.00 / 1.00 / 1.00 / 1.00"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(tab), "\n") {
		if got := strings.Count(line, "|"); got != 13 {
			t.Errorf("%d column separators, want 13 (12 columns): %s", got, line)
		}
	}
}
