package router

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"time"
)

// Watchdog probes prove that both forwarding loops are alive: the outbound
// loop must see a probe packet the kernel routed into the TUN, the inbound
// loop a probe datagram sent to the data port from loopback. Probes are
// recognised only on the paths that would otherwise drop them (no route,
// unknown peer), so they cost the forwarding of real traffic nothing.

// ProbePort is the UDP destination port of an outbound probe packet.
const ProbePort = 0x7766

// probeMagic starts every probe payload; an 8-byte nonce follows.
var probeMagic = []byte("weft-probe")

// ProbePayload is the payload of a probe carrying nonce.
func ProbePayload(nonce uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), probeMagic...), nonce)
}

func probeNonce(payload []byte) (uint64, bool) {
	if len(payload) != len(probeMagic)+8 || !bytes.HasPrefix(payload, probeMagic) {
		return 0, false
	}
	return binary.BigEndian.Uint64(payload[len(probeMagic):]), true
}

// outboundProbe recognises a probe: UDP to ProbePort at an address of our
// own subnet (which no peer owns, so it came through the no-route path).
func outboundProbe(pkt []byte, local netip.Prefix, dst netip.Addr) (uint64, bool) {
	if !local.Contains(dst) {
		return 0, false
	}
	var l4 []byte
	switch {
	case dst.Is4() && len(pkt) >= 20 && pkt[9] == 17:
		l4 = pkt[int(pkt[0]&0x0f)*4:]
	case dst.Is6() && len(pkt) >= 40 && pkt[6] == 17:
		l4 = pkt[40:]
	default:
		return 0, false
	}
	if len(l4) < 8 || binary.BigEndian.Uint16(l4[2:4]) != ProbePort {
		return 0, false
	}
	return probeNonce(l4[8:])
}

// inboundProbe recognises a probe datagram from loopback.
func inboundProbe(d []byte, src netip.Addr) (uint64, bool) {
	if !src.IsLoopback() {
		return 0, false
	}
	return probeNonce(d)
}

// WaitProbes waits until both loops have seen the probe with nonce (the
// inbound one only if inbound is true), or the timeout passes.
func (r *Router) WaitProbes(nonce uint64, inbound bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if r.probeOut.Load() == nonce && (!inbound || r.probeIn.Load() == nonce) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
