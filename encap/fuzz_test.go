package encap

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzDecodeUDP feeds arbitrary datagrams to the udp format's decoder (the
// inner IP packet parser): it must never panic, and what it accepts must be
// self-consistent.
func FuzzDecodeUDP(f *testing.F) {
	f.Add(ip4("10.244.1.0", "10.244.2.9", 60))
	f.Add([]byte{0x60, 0, 0, 0, 0, 0, 17, 64})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		src, dst, ok := IPAddrs(b)
		if !ok {
			return
		}
		l := IPLen(b)
		if l > len(b) || l < 20 {
			t.Fatalf("accepted packet with IPLen %d of %d bytes", l, len(b))
		}
		if src.Is4() != dst.Is4() {
			t.Fatalf("mixed families %s %s", src, dst)
		}
	})
}

// FuzzDecodeVXLAN feeds arbitrary datagrams to the vxlan decoder and the ARP
// responder.
func FuzzDecodeVXLAN(f *testing.F) {
	frame := make([]byte, 22+28)
	PutVXLAN(frame, 1, Broadcast, MAC{2}, EtherTypeARP)
	f.Add(frame)
	g := make([]byte, 22)
	PutVXLAN(g, 0xffffff, MAC{2, 0x57}, MAC{}, EtherTypeIPv4)
	f.Add(append(g, ip4("10.244.2.1", "10.244.1.0", 40)...))
	f.Add([]byte{8, 0, 0, 0})
	ip := netip.MustParseAddr("10.244.1.0")
	codec := VXLAN.NewCodec(Local{VNI: 1, MAC: MAC{2, 0x57}, Addrs: []netip.Addr{ip, netip.MustParseAddr("fd00:10:244:1::")}})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseVXLAN(b)
		// The codec agrees with the decoder, and what it delivers is the
		// payload.
		views, verdicts := [][]byte{bytes.Clone(b)}, []Verdict{Deliver}
		codec.Unwrap(views, verdicts)
		switch v := verdicts[0]; {
		case err != nil && v != Malformed, err == nil && fr.VNI != 1 && v != WrongVNI:
			t.Fatalf("verdict %v for %x (decoder: %+v, %v)", v, b, fr, err)
		case v == Deliver && len(views[0]) != len(b)-22:
			t.Fatalf("delivered %d bytes of %d", len(views[0]), len(b))
		}
		if err != nil {
			return
		}
		if fr.VNI >= 1<<24 || len(fr.Payload) != len(b)-22 {
			t.Fatalf("bad frame %+v from %d bytes", fr, len(b))
		}
		eth := bytes.Clone(b[VXLANHeaderLen:])
		if ARPReply(eth, MAC{2, 0x57}, ip) && len(eth) != len(b)-VXLANHeaderLen {
			t.Fatal("ARP reply changed the frame length")
		}
		IPAddrs(fr.Payload)
	})
}
