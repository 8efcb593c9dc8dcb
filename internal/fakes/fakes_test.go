package fakes

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/tun"
)

// A hub gives a datagram to the socket at its destination; of a reuseport
// group, to the one its source port picks, as the kernel's steering does.
func TestHubSteersBySourcePort(t *testing.T) {
	h := NewHub()
	a, b := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	group := []*Socket{h.Attach(func() netip.Addr { return b }, 8285), h.Attach(func() netip.Addr { return b }, 8285)}
	for _, tt := range []struct {
		name    string
		srcPort uint16
		want    int // the group's socket that gets it
	}{{"even port", 40000, 0}, {"odd port", 40001, 1}} {
		t.Run(tt.name, func(t *testing.T) {
			src := h.Attach(func() netip.Addr { return a }, tt.srcPort)
			defer src.Close()
			if _, err := src.WriteTo([][]byte{[]byte(tt.name)}, encap.NewEndpoint(netip.AddrPortFrom(b, 8285))); err != nil {
				t.Fatal(err)
			}
			views, srcs := make([][]byte, 4), make([]netip.AddrPort, 4)
			if len(group[tt.want].In) != 1 || len(group[1-tt.want].In) != 0 {
				t.Fatalf("socket %d of the group did not get it alone", tt.want)
			}
			n, err := group[tt.want].ReadViews(nil, 0, views, srcs)
			if err != nil || n != 1 || !bytes.Equal(views[0], []byte(tt.name)) || srcs[0] != src.LocalAddr() {
				t.Errorf("read %d %q from %v (%v)", n, views[0], srcs[0], err)
			}
		})
	}
}

// A TUN moves the address of the family it is asked to, and refuses to
// move one it does not hold.
func TestTUNSetAddress(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.244.1.0/16"), netip.MustParsePrefix("fd00:10:244:1::/56")
	for _, tt := range []struct {
		name      string
		next, old netip.Prefix
		want      []netip.Prefix
		ok        bool
	}{
		{"IPv4", netip.MustParsePrefix("10.244.2.0/16"), v4, []netip.Prefix{netip.MustParsePrefix("10.244.2.0/16"), v6}, true},
		{"IPv6", netip.MustParsePrefix("fd00:10:244:2::/56"), v6, []netip.Prefix{v4, netip.MustParsePrefix("fd00:10:244:2::/56")}, true},
		{"not held", netip.MustParsePrefix("10.244.2.0/16"), netip.MustParsePrefix("10.244.9.0/16"), []netip.Prefix{v4, v6}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ev := &Events{}
			d := NewTUN(ev, tun.Config{Addrs: []netip.Prefix{v4, v6}, Queues: 2})
			err := d.SetAddress(tt.next, tt.old)
			if (err == nil) != tt.ok || !slices.Equal(d.Addrs(), tt.want) {
				t.Errorf("SetAddress: %v, addresses %v, want %v", err, d.Addrs(), tt.want)
			}
			d.Close()
			d.Close()
			if d.Closes() != 2 || len(d.Devices()) != 2 || !slices.Contains(ev.List(), "link gone") {
				t.Errorf("closes %d, queues %d, events %q", d.Closes(), len(d.Devices()), ev.List())
			}
		})
	}
}

// A device refuses the tail of a batch when told to, and records the rest.
func TestDeviceRefuses(t *testing.T) {
	d := NewDevice(true)
	d.Refuse = 1
	res, err := d.Write([][]byte{{0, 1}, {0, 2}, {0, 3}}, 1, tun.ChecksumFull)
	if err == nil || res.Packets != 2 || res.Lost != 1 || len(d.Packets()) != 2 || !bytes.Equal(d.Packets()[1], []byte{2}) {
		t.Errorf("wrote %+v (%v), recorded %v", res, err, d.Packets())
	}
}
