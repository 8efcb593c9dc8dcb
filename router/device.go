package router

import (
	"net/netip"

	"github.com/weftnet/weft/encap"
)

// Device is the TUN side of the data path: wireguard's tun.Device shape.
// Packets sit at bufs[i][offset:]; the bytes in front of offset are the
// device's to use (the virtio-net header).
type Device interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	// Readable reports, without blocking, whether Read would return a
	// packet now. Only the reading goroutine calls it.
	Readable() bool
	Close() error
}

// Conn is the underlay side: a batched datagram socket (encap.Conn).
type Conn interface {
	ReadBatch(bufs [][]byte, offset int, sizes []int, srcs []netip.AddrPort) (int, error)
	WriteTo(pkts [][]byte, ep encap.Endpoint) (int, error)
	WriteOne(b []byte, dst netip.AddrPort) error
	Close() error
}

// Routes installs and removes the kernel routes that reach on-link peers
// directly (host-gw / DirectRouting).
type Routes interface {
	Replace(dst netip.Prefix, via netip.Addr) error
	Delete(dst netip.Prefix, via netip.Addr) error
}
