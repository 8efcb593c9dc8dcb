package encap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func ip4(src, dst string, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return p
}

func TestIPAddrs(t *testing.T) {
	v6 := make([]byte, 48)
	v6[0] = 0x60
	binary.BigEndian.PutUint16(v6[4:6], 8)
	v6[23], v6[39] = 1, 2
	withOptions := ip4("10.0.0.1", "10.0.0.2", 40)
	withOptions[0] = 0x46
	for _, tc := range []struct {
		name     string
		pkt      []byte
		ok       bool
		src, dst string
		iplen    int
	}{
		{"ipv4", ip4("10.244.1.0", "10.244.2.9", 60), true, "10.244.1.0", "10.244.2.9", 60},
		{"ipv4 with padding", append(ip4("10.0.0.1", "10.0.0.2", 28), 0, 0), true, "10.0.0.1", "10.0.0.2", 28},
		{"ipv4 options", withOptions, true, "10.0.0.1", "10.0.0.2", 40},
		{"ipv6", v6, true, "::1", "::2", 48},
		{"empty", nil, false, "", "", 0},
		{"ipv4 short header", ip4("10.0.0.1", "10.0.0.2", 20)[:19], false, "", "", 0},
		{"ipv4 total beyond slice", ip4("10.0.0.1", "10.0.0.2", 60)[:40], false, "", "", 60},
		{"ipv4 ihl too small", func() []byte { p := ip4("10.0.0.1", "10.0.0.2", 40); p[0] = 0x44; return p }(), false, "", "", 40},
		{"ipv4 total below ihl", func() []byte { p := ip4("10.0.0.1", "10.0.0.2", 40); p[3] = 10; return p }(), false, "", "", 10},
		{"ipv6 short", v6[:39], false, "", "", 0},
		{"ipv6 payload beyond slice", v6[:47], false, "", "", 48},
		{"version 5", []byte{0x50, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, false, "", "", 0},
	} {
		src, dst, ok := IPAddrs(tc.pkt)
		if ok != tc.ok {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if got := IPLen(tc.pkt); got != tc.iplen {
			t.Errorf("%s: IPLen = %d, want %d", tc.name, got, tc.iplen)
		}
		if ok && (src.String() != tc.src || dst.String() != tc.dst) {
			t.Errorf("%s: got %s → %s, want %s → %s", tc.name, src, dst, tc.src, tc.dst)
		}
	}
}

func TestVXLANEncodeByteExact(t *testing.T) {
	b := make([]byte, 22)
	PutVXLAN(b, 0xabcdef, MAC{1, 2, 3, 4, 5, 6}, MAC{0x02, 0x57, 10, 244, 1, 0}, EtherTypeIPv4)
	want := "08000000abcdef00" + "010203040506" + "02570af40100" + "0800"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("header %s, want %s", got, want)
	}
	f, err := ParseVXLAN(append(b, 0x45))
	if err != nil || f.VNI != 0xabcdef || f.Dst != (MAC{1, 2, 3, 4, 5, 6}) || f.EtherType != EtherTypeIPv4 || len(f.Payload) != 1 {
		t.Fatalf("round trip: %+v, %v", f, err)
	}
}

func TestVXLANDecodeErrors(t *testing.T) {
	good := make([]byte, 30)
	PutVXLAN(good, 1, MAC{}, MAC{}, EtherTypeIPv4)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter than"},
		{"header only", good[:8], "shorter than"},
		{"one byte short", good[:21], "shorter than"},
		{"no I flag", func() []byte { b := bytes.Clone(good); b[0] = 0; return b }(), "I flag"},
	} {
		_, err := ParseVXLAN(tc.b)
		if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want malformed %q", tc.name, err, tc.want)
		}
	}
	// Reserved bits are ignored (RFC 7348 §5).
	b := bytes.Clone(good)
	b[0], b[3], b[7] = 0x08|0x80, 0xff, 0xff
	if f, err := ParseVXLAN(b); err != nil || f.VNI != 1 {
		t.Errorf("reserved bits: %+v, %v", f, err)
	}
}

func TestARPReply(t *testing.T) {
	our := MAC{0x02, 0x57, 10, 244, 1, 0}
	asker := MAC{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01}
	req, _ := hex.DecodeString("ffffffffffff" + "aabbccddee01" + "0806" +
		"0001" + "0800" + "06" + "04" + "0001" + "aabbccddee01" + "0af40900" + "000000000000" + "0af40100")
	if ARPReply(bytes.Clone(req), our, netip.MustParseAddr("10.244.7.0")) {
		t.Error("answered an ARP request for someone else's address")
	}
	frame := bytes.Clone(req)
	if !ARPReply(frame, our, netip.MustParseAddr("10.244.1.0")) {
		t.Fatal("did not answer an ARP request for our address")
	}
	want := hex.EncodeToString(asker[:]) + hex.EncodeToString(our[:]) + "0806" +
		"0001" + "0800" + "06" + "04" + "0002" + hex.EncodeToString(our[:]) + "0af40100" + hex.EncodeToString(asker[:]) + "0af40900"
	if got := hex.EncodeToString(frame); got != want {
		t.Fatalf("reply\n got %s\nwant %s", got, want)
	}
	reply := bytes.Clone(frame)
	if ARPReply(reply, our, netip.MustParseAddr("10.244.1.0")) {
		t.Error("answered an ARP reply")
	}
	if ARPReply(req[:30], our, netip.MustParseAddr("10.244.1.0")) {
		t.Error("answered a truncated request")
	}
}

func TestVTEPMACStable(t *testing.T) {
	if got := VTEPMAC(netip.MustParsePrefix("10.244.1.0/24")).String(); got != "02:57:0a:f4:01:00" {
		t.Errorf("VTEPMAC = %s", got)
	}
	if m := VTEPMAC(netip.MustParsePrefix("fd00::1:0/112")); m[0] != 0x02 || m[5] != 0 {
		t.Errorf("IPv6 VTEPMAC = %s", m)
	}
}

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		s        string
		k        Kind
		overhead int
		port     uint16
	}{{"udp", UDP, 28, 8285}, {"VXLAN", VXLAN, 50, 8472}, {"none", None, 0, 8285}, {"host-gw", None, 0, 8285}} {
		k, err := ParseKind(tc.s)
		if err != nil || k != tc.k || k.Overhead(false) != tc.overhead || k.DefaultPort() != tc.port {
			t.Errorf("%s: %v %v overhead %d port %d", tc.s, k, err, k.Overhead(false), k.DefaultPort())
		}
	}
	if _, err := ParseKind("gre"); err == nil || !strings.Contains(err.Error(), `"gre"`) {
		t.Errorf("ParseKind(gre) err = %v", err)
	}
	if VXLAN.Overhead(true) != 70 {
		t.Errorf("vxlan over IPv6 overhead %d, want 70", VXLAN.Overhead(true))
	}
}

func BenchmarkPutVXLAN(b *testing.B) {
	buf := make([]byte, 1500)
	for b.Loop() {
		PutVXLAN(buf, 1, Broadcast, MAC{}, EtherTypeIPv4)
	}
}

func BenchmarkParseVXLAN(b *testing.B) {
	buf := make([]byte, 1450)
	PutVXLAN(buf, 1, Broadcast, MAC{}, EtherTypeIPv4)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseVXLAN(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIPAddrs(b *testing.B) {
	p := ip4("10.244.1.0", "10.244.2.1", 1400)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := IPAddrs(p); !ok {
			b.Fatal("bad")
		}
	}
}
