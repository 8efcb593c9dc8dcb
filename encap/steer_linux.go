package encap

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// soAttachReusePortCBPF is SO_ATTACH_REUSEPORT_CBPF (asm-generic/socket.h),
// which golang.org/x/sys does not name.
const soAttachReusePortCBPF = 51

// skfNetOff is SKF_NET_OFF (linux/filter.h), -0x100000 as a classic BPF
// offset: a load at skfNetOff+k reads byte k of the network header.
const skfNetOff uint32 = 0xfff00000

// SteerBySourcePort makes the SO_REUSEPORT group this socket belongs to
// give each datagram to the socket whose index (the order in which the
// group's sockets were bound) is the datagram's UDP source port modulo n.
// A weft worker that sends from a port ≡ i (mod n) therefore has the
// peer's worker i receive it, and the peer's worker i's replies come back
// to our worker i: a flow keeps one worker on both hosts. (Left to the
// kernel's hash, the worker that receives a flow's replies, and so the TUN
// queue its replies are written to, need not be the one that sends it; the
// kernel's TUN flow steering then moves the flow between queues on every
// round, reordering it.)
func (c *Conn) SteerBySourcePort(n int) error {
	if n < 1 {
		return fmt.Errorf("steer by source port: %d sockets", n)
	}
	srcPort := []bpf.Instruction{
		// IPv4: the UDP header follows an IP header of IHL words.
		bpf.LoadAbsolute{Off: skfNetOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x0f},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2},
		bpf.TAX{},
		bpf.LoadIndirect{Off: skfNetOff, Size: 2},
	}
	if c.v6 {
		// IPv6: the UDP header follows the fixed 40-byte header (weft
		// sends no extension headers).
		srcPort = []bpf.Instruction{bpf.LoadAbsolute{Off: skfNetOff + 40, Size: 2}}
	}
	prog := append(srcPort, bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)}, bpf.RetA{})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("steer by source port: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: unsafe.SliceData(filter)}
	var serr error
	if err := c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, soAttachReusePortCBPF, &fprog)
	}); err != nil {
		return fmt.Errorf("steer by source port: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("steer by source port (SO_ATTACH_REUSEPORT_CBPF): %w", serr)
	}
	return nil
}
