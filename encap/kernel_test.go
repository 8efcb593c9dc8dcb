package encap

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kernelFrame reads a UDP payload captured from a Linux kernel VXLAN device
// (see testdata/kernel-vxlan).
func kernelFrame(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "kernel-vxlan", name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	var hx string
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			hx += strings.TrimSpace(line)
		}
	}
	b, err := hex.DecodeString(hx)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	kernelMAC = MAC{0x02, 0, 0, 0, 0, 0x09}
	weftMAC   = MAC{0x02, 0x57, 0x0a, 0xf4, 0x01, 0x00}
)

func TestKernelVXLANFrames(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dst       MAC
		etherType uint16
		src, ip   string
	}{
		{"icmp-echo-request", weftMAC, EtherTypeIPv4, "10.244.9.0", "10.244.1.0"},
		{"icmp-echo-reply", weftMAC, EtherTypeIPv4, "10.244.9.0", "10.244.1.0"},
		{"arp-request", Broadcast, EtherTypeARP, "", ""},
		{"mld-report-multicast", MAC{0x33, 0x33, 0, 0, 0, 0x16}, EtherTypeIPv6, "fe80::ff:fe00:9", "ff02::16"},
	} {
		b := kernelFrame(t, tc.name)
		f, err := ParseVXLAN(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if f.VNI != 1 || f.Src != kernelMAC || f.Dst != tc.dst || f.EtherType != tc.etherType {
			t.Errorf("%s: decoded %+v", tc.name, f)
		}
		if tc.src != "" {
			src, dst, ok := IPAddrs(f.Payload)
			if !ok || src.String() != tc.src || dst.String() != tc.ip {
				t.Errorf("%s: inner %s → %s (%v)", tc.name, src, dst, ok)
			}
		}
		// Our encoder writes the same header bytes the kernel did.
		if tc.etherType != EtherTypeARP {
			hdr := make([]byte, VXLANHeaderLen+EthernetHeaderLen)
			PutVXLAN(hdr, 1, f.Dst, f.Src, EtherTypeFor(f.Payload))
			if !bytes.Equal(hdr, b[:len(hdr)]) {
				t.Errorf("%s: our header %x, kernel's %x", tc.name, hdr, b[:len(hdr)])
			}
		}
	}
	arp := kernelFrame(t, "arp-request")
	eth := arp[VXLANHeaderLen:]
	if !ARPReply(eth, weftMAC, netip.MustParseAddr("10.244.1.0")) {
		t.Fatal("did not answer the kernel's ARP request for our VTEP address")
	}
	if MAC(eth[0:6]) != kernelMAC || MAC(eth[6:12]) != weftMAC {
		t.Errorf("ARP reply addressed %x from %x", eth[0:6], eth[6:12])
	}
}
