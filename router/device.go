package router

import (
	"net/netip"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/tun"
)

// Device is the TUN side of the data path: one queue of a tun.Device (a
// *tun.Queue, or the *tun.Device for its first queue). Packets sit at
// bufs[i][offset:]; the bytes in front of offset are the device's to use
// (the virtio-net header).
type Device interface {
	// Read returns a batch of packets; TCP and UDP checksums may be left
	// partial (tun.CompleteChecksum finishes one).
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// ReadMore is Read without the wait: 0 and no error when no packet is
	// waiting (tun.Queue.ReadMore). Only the reading goroutine calls it.
	ReadMore(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write writes a batch whose checksums are complete or partial as mode
	// says, and reports what the kernel took and refused.
	Write(bufs [][]byte, offset int, mode tun.Checksum) (tun.WriteResult, error)
	BatchSize() int
	// Readable reports, without blocking, whether Read would return a
	// packet now (the busy poll asks it). Only the reading goroutine calls
	// it.
	Readable() bool
	// WriteFallback reports whether the kernel refused coalesced writes
	// and the device coalesces less (weft_tun_gro_fallback).
	WriteFallback() bool
	Close() error
}

// Conn is the underlay side: a batched datagram socket (encap.Conn).
type Conn interface {
	// ReadViews reads datagrams as views, which stay valid until the next
	// call (encap.Conn.ReadViews).
	ReadViews(bufs [][]byte, offset int, views [][]byte, srcs []netip.AddrPort) (int, error)
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
