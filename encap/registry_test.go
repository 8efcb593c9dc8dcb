package encap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// sealHeaderLen is package seal's data header (seal.HeaderLen), which an
// encrypted data plane writes in front of the encapsulation header, in the
// same headroom.
const sealHeaderLen = 16

func TestRegistry(t *testing.T) {
	// A Kind's value is its byte in node metadata: it never changes.
	if UDP != 1 || VXLAN != 2 || None != 3 {
		t.Fatalf("metadata bytes changed: udp %d, vxlan %d, none %d", UDP, VXLAN, None)
	}
	ks := Kinds()
	if len(ks) != 3 || ks[0] != UDP || ks[1] != VXLAN || ks[2] != None {
		t.Fatalf("Kinds() = %v", ks)
	}
	names := map[string]bool{}
	for _, k := range ks {
		if !k.Valid() || names[k.String()] {
			t.Errorf("%v: invalid or named twice", k)
		}
		names[k.String()] = true
		if got, err := ParseKind(strings.ToUpper(k.String())); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %v, %v", k, got, err)
		}
		c := k.NewCodec(Local{VNI: 1})
		if c == nil || c.HeaderLen() != k.HeaderLen() {
			t.Errorf("%v: codec %v, want one writing the %d-byte header", k, c, k.HeaderLen())
		}
		if k.HeaderLen()+sealHeaderLen > Headroom {
			t.Errorf("%v: a %d-byte header behind the encrypted header does not fit in the %d bytes of headroom", k, k.HeaderLen(), Headroom)
		}
		if k.Tunnel() && k.Overhead(false) != 28+k.HeaderLen() {
			t.Errorf("%v: overhead %d", k, k.Overhead(false))
		}
	}
	if None.Tunnel() || None.Overhead(true) != 0 || None.HeaderLen() != 0 || !UDP.Tunnel() || !VXLAN.Tunnel() {
		t.Error("none is the one encapsulation without a tunnel")
	}
	if !VXLAN.HasVTEP() || UDP.HasVTEP() || None.HasVTEP() {
		t.Error("vxlan is the one with VTEPs")
	}
	for _, k := range []Kind{0, 4, 7, 255} {
		if k.Valid() || k.Tunnel() || k.HasVTEP() || k.NewCodec(Local{}) != nil || !strings.HasPrefix(k.String(), "encap(") {
			t.Errorf("Kind(%d): valid %v, tunnel %v, %q", uint8(k), k.Valid(), k.Tunnel(), k)
		}
	}
	if Kind(7).String() != "encap(7)" {
		t.Errorf("Kind(7) = %q", Kind(7))
	}
	if got := Names(); got != "udp, vxlan or none" {
		t.Errorf("Names() = %q", got)
	}
	if got := Help(); got != "udp, vxlan, or none (host-gw: direct routes only)" {
		t.Errorf("Help() = %q", got)
	}
	if got := PortHelp(); got != "8285 for udp, 8472 for vxlan" {
		t.Errorf("PortHelp() = %q", got)
	}
	if _, err := ParseKind("gre"); err == nil || !strings.Contains(err.Error(), "want udp, vxlan or none") {
		t.Errorf("ParseKind(gre) err = %v", err)
	}
}

// frame is an inner packet p in a buffer with headroom, as the router hands
// it to Wrap: the slice starts off bytes before the encapsulation header.
func frame(p []byte, off, hdr int) []byte {
	b := make([]byte, Headroom+len(p))
	copy(b[Headroom:], p)
	return b[Headroom-hdr-off:]
}

func ip6(n int) []byte {
	p := make([]byte, n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(n-40))
	return p
}

func TestUDPCodec(t *testing.T) {
	c := UDP.NewCodec(Local{})
	p := ip4("10.244.1.0", "10.244.2.1", 40)
	f := frame(p, sealHeaderLen, 0)
	before := bytes.Clone(f)
	c.Wrap([][]byte{f}, sealHeaderLen, Remote{})
	if !bytes.Equal(f, before) {
		t.Error("udp's Wrap wrote something")
	}
	views := [][]byte{p, {1, 2}}
	verdicts := []Verdict{Malformed, Malformed}
	c.Unwrap(views, verdicts)
	if verdicts[0] != Deliver || verdicts[1] != Deliver || !bytes.Equal(views[0], p) {
		t.Errorf("udp's Unwrap: %v", verdicts)
	}
}

func TestVXLANCodecWrap(t *testing.T) {
	ours, theirs := MAC{0x02, 0x57, 10, 244, 1, 0}, MAC{0x02, 0x57, 10, 244, 2, 0}
	c := VXLAN.NewCodec(Local{VNI: 0xabcdef, MAC: ours, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.0")}})
	p4, p6 := ip4("10.244.1.0", "10.244.2.1", 40), ip6(48)
	for _, off := range []int{0, sealHeaderLen} {
		f4, f6 := frame(p4, off, 22), frame(p6, off, 22)
		c.Wrap([][]byte{f4, f6}, off, Remote{MAC: theirs})
		for _, tc := range []struct {
			f, p []byte
			et   string
		}{{f4, p4, "0800"}, {f6, p6, "86dd"}} {
			want := "08000000abcdef00" + "02570af40200" + "02570af40100" + tc.et + hex.EncodeToString(tc.p)
			if got := hex.EncodeToString(tc.f[off:]); got != want {
				t.Errorf("offset %d: frame\n got %s\nwant %s", off, got, want)
			}
			if !bytes.Equal(tc.f[:off], make([]byte, off)) {
				t.Errorf("offset %d: Wrap wrote in front of the header", off)
			}
		}
	}
}

// vx is a VXLAN datagram with room behind it (cap 128+), as a socket
// leaves one in its buffer.
func vx(vni uint32, dst, src MAC, etherType uint16, payload []byte) []byte {
	d := make([]byte, 22+len(payload), 22+len(payload)+128)
	PutVXLAN(d, vni, dst, src, etherType)
	copy(d[22:], payload)
	return d
}

func TestVXLANCodecUnwrap(t *testing.T) {
	ours, theirs := MAC{0x02, 0x57, 10, 244, 1, 0}, MAC{0x02, 0x57, 10, 244, 2, 0}
	addr, addr6 := netip.MustParseAddr("10.244.1.0"), netip.MustParseAddr("fd00:10:244:1::")
	inner := ip4("10.244.2.7", "10.244.1.0", 80)
	arpReq, _ := hex.DecodeString("0001" + "0800" + "06" + "04" + "0001" + "02570af40200" + "0af40200" + "000000000000" + "0af40100")
	arpOther := bytes.Clone(arpReq)
	arpOther[27] = 9 // who has 10.244.1.9?
	ns := nsFrame(t, theirs, netip.MustParseAddr("fd00:10:244:2::"), addr6, true)[EthernetHeaderLen:]
	nsOther := nsFrame(t, theirs, netip.MustParseAddr("fd00:10:244:2::"), netip.MustParseAddr("fd00:10:244:1::9"), true)[EthernetHeaderLen:]
	for _, tc := range []struct {
		name  string
		local Local
		d     []byte
		want  Verdict
		view  []byte // the view after Unwrap, for Deliver
	}{
		{"ipv4 to our MAC", Local{}, vx(1, ours, theirs, EtherTypeIPv4, inner), Deliver, inner},
		{"ipv4 broadcast", Local{}, vx(1, Broadcast, theirs, EtherTypeIPv4, inner), Deliver, inner},
		{"ipv6", Local{}, vx(1, ours, theirs, EtherTypeIPv6, ip6(60)), Deliver, ip6(60)},
		{"wrong VNI", Local{}, vx(7, ours, theirs, EtherTypeIPv4, inner), WrongVNI, nil},
		{"another MAC", Local{}, vx(1, theirs, theirs, EtherTypeIPv4, inner), NotOurMAC, nil},
		{"LLDP", Local{}, vx(1, ours, theirs, 0x88cc, inner), BadEtherType, nil},
		{"short", Local{}, []byte{0x08, 0, 0, 0, 0, 0, 1, 0}, Malformed, nil},
		{"no I flag", Local{}, func() []byte { d := vx(1, ours, theirs, EtherTypeIPv4, inner); d[0] = 0; return d }(), Malformed, nil},
		{"ARP for us", Local{}, vx(1, Broadcast, theirs, EtherTypeARP, arpReq), Reply, nil},
		{"ARP for another", Local{}, vx(1, Broadcast, theirs, EtherTypeARP, arpOther), BadEtherType, nil},
		{"NS for us", Local{Addrs: []netip.Addr{addr6}}, vx(1, SolicitedNodeMAC(addr6), theirs, EtherTypeIPv6, ns), Reply, nil},
		{"NS for another", Local{Addrs: []netip.Addr{addr6}}, vx(1, ours, theirs, EtherTypeIPv6, nsOther), Deliver, nsOther},
		{"NS without an IPv6 address", Local{}, vx(1, ours, theirs, EtherTypeIPv6, ns), Deliver, ns},
		{"solicited-node MAC without an IPv6 address", Local{}, vx(1, SolicitedNodeMAC(addr6), theirs, EtherTypeIPv6, ns), NotOurMAC, nil},
		{"another solicited-node MAC", Local{Addrs: []netip.Addr{addr6}}, vx(1, SolicitedNodeMAC(netip.MustParseAddr("fd00::77")), theirs, EtherTypeIPv6, ns), NotOurMAC, nil},
	} {
		l := tc.local
		l.VNI, l.MAC = 1, ours
		l.Addrs = append([]netip.Addr{addr}, l.Addrs...) // the IPv4 address first, as before the IPv6 one
		c := VXLAN.NewCodec(l)
		views, verdicts := [][]byte{tc.d}, []Verdict{Malformed}
		c.Unwrap(views, verdicts)
		if verdicts[0] != tc.want {
			t.Errorf("%s: verdict %v, want %v", tc.name, verdicts[0], tc.want)
			continue
		}
		if tc.want == Deliver && !bytes.Equal(views[0], tc.view) {
			t.Errorf("%s: delivered %x", tc.name, views[0])
		}
		if tc.want != Reply {
			continue
		}
		f, err := ParseVXLAN(views[0])
		if err != nil || f.VNI != 1 || f.Dst != theirs || f.Src != ours {
			t.Errorf("%s: reply %+v, %v", tc.name, f, err)
			continue
		}
		switch f.EtherType {
		case EtherTypeARP:
			if len(f.Payload) != 28 || binary.BigEndian.Uint16(f.Payload[6:8]) != 2 || !bytes.Equal(f.Payload[8:14], ours[:]) {
				t.Errorf("%s: ARP reply %x", tc.name, f.Payload)
			}
		case EtherTypeIPv6:
			if len(f.Payload) != 72 || f.Payload[40] != 136 || !bytes.Equal(f.Payload[40+26:40+32], ours[:]) {
				t.Errorf("%s: advertisement %x", tc.name, f.Payload)
			}
		default:
			t.Errorf("%s: reply EtherType %#x", tc.name, f.EtherType)
		}
	}
}

// A batch: each datagram gets its own verdict, in place.
func TestVXLANCodecUnwrapBatch(t *testing.T) {
	ours, theirs := MAC{0x02, 0x57, 10, 244, 1, 0}, MAC{0x02, 0x57, 10, 244, 2, 0}
	c := VXLAN.NewCodec(Local{VNI: 1, MAC: ours, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.0")}})
	inner := ip4("10.244.2.7", "10.244.1.0", 80)
	views := [][]byte{vx(1, ours, theirs, EtherTypeIPv4, inner), vx(2, ours, theirs, EtherTypeIPv4, inner), vx(1, ours, theirs, EtherTypeIPv4, inner)}
	verdicts := make([]Verdict, 4)
	verdicts[3] = Reply // beyond the views: untouched
	c.Unwrap(views, verdicts)
	if verdicts[0] != Deliver || verdicts[1] != WrongVNI || verdicts[2] != Deliver || verdicts[3] != Reply {
		t.Fatalf("verdicts %v", verdicts)
	}
	if !bytes.Equal(views[0], inner) || !bytes.Equal(views[2], inner) {
		t.Error("views not the inner packets")
	}
}

func TestCodecsAllocateNothing(t *testing.T) {
	ours, theirs := MAC{0x02, 0x57, 10, 244, 1, 0}, MAC{0x02, 0x57, 10, 244, 2, 0}
	inner := ip4("10.244.2.7", "10.244.1.0", 1400)
	for _, k := range Kinds() {
		c := k.NewCodec(Local{VNI: 1, MAC: ours, Addrs: []netip.Addr{netip.MustParseAddr("10.244.1.0")}})
		const n = 64
		frames, views, in := make([][]byte, n), make([][]byte, n), make([][]byte, n)
		verdicts := make([]Verdict, n)
		for i := range n {
			frames[i] = frame(inner, sealHeaderLen, k.HeaderLen())
			in[i] = inner
			if k == VXLAN {
				in[i] = vx(1, ours, theirs, EtherTypeIPv4, inner)
			}
		}
		if a := testing.AllocsPerRun(100, func() { c.Wrap(frames, sealHeaderLen, Remote{MAC: theirs}) }); a != 0 {
			t.Errorf("%v: Wrap allocates %.1f times per batch", k, a)
		}
		if a := testing.AllocsPerRun(100, func() { copy(views, in); c.Unwrap(views, verdicts) }); a != 0 {
			t.Errorf("%v: Unwrap allocates %.1f times per batch", k, a)
		}
		for i, v := range verdicts {
			if v != Deliver {
				t.Fatalf("%v: verdict %d is %v", k, i, v)
			}
		}
	}
}

func BenchmarkVXLANWrap(b *testing.B) {
	c := VXLAN.NewCodec(Local{VNI: 1, MAC: MAC{2}})
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = frame(ip4("10.244.1.0", "10.244.2.1", 1400), 0, 22)
	}
	for b.Loop() {
		c.Wrap(frames, 0, Remote{MAC: MAC{2, 1}})
	}
}

func BenchmarkVXLANUnwrap(b *testing.B) {
	c := VXLAN.NewCodec(Local{VNI: 1, MAC: MAC{2}})
	in, views := make([][]byte, 64), make([][]byte, 64)
	verdicts := make([]Verdict, 64)
	for i := range in {
		in[i] = vx(1, MAC{2}, MAC{2, 1}, EtherTypeIPv4, ip4("10.244.2.1", "10.244.1.0", 1400))
	}
	for b.Loop() {
		copy(views, in)
		c.Unwrap(views, verdicts)
	}
}
