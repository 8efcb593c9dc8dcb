package kernelvx

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/tun"
)

// System is the real Kernel: rtnetlink through vishvananda/netlink and
// nftables through google/nftables, in one network namespace. Its calls
// are serialized.
type System struct {
	mu      sync.Mutex
	h       *netlink.Handle
	nftOpts []nftables.ConnOption // each nftables transaction has a Conn of its own
	// fastBits are the subnet lengths the filter's fast sets hold (IPv4,
	// IPv6; -1: none), as the last FilterEnsure built it.
	fastBits [2]int
}

var _ Kernel = (*System)(nil)

// NewSystem returns the Kernel of the calling process's network namespace.
func NewSystem() (*System, error) {
	return NewSystemAt(netns.None())
}

// NewSystemAt returns the Kernel of the network namespace ns (netns.None()
// for the calling process's). Its sockets are opened in ns, so no thread
// ever changes namespace; ns must stay open until Close.
func NewSystemAt(ns netns.NsHandle) (*System, error) {
	var (
		h    *netlink.Handle
		err  error
		opts []nftables.ConnOption
	)
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("kernelvx: open rtnetlink: %w", err)
	}
	return &System{h: h, nftOpts: opts, fastBits: [2]int{-1, -1}}, nil
}

// Close closes the rtnetlink handle.
func (s *System) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.h.Close()
	return nil
}

// byIndex is a link value for the netlink calls that only read its index.
func byIndex(index int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
}

// gone reports whether err says that what was to be removed is not there.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) ||
		errors.Is(err, unix.EADDRNOTAVAIL)
}

func toLink(l netlink.Link) Link {
	a := l.Attrs()
	out := Link{Name: a.Name, Index: a.Index, Kind: l.Type(), MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
	if len(a.HardwareAddr) == 6 {
		out.MAC = encap.MAC(a.HardwareAddr)
	}
	if vx, ok := l.(*netlink.Vxlan); ok {
		out.VNI = uint32(vx.VxlanId)
		out.Port = uint16(vx.Port)
		out.Local, _ = netip.AddrFromSlice(vx.SrcAddr)
		out.Local = out.Local.Unmap()
		out.UnderlayIndex = vx.VtepDevIndex
		out.Learning = vx.Learning
	}
	return out
}

// LinkByName implements Kernel.
func (s *System) LinkByName(name string) (Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.h.LinkByName(name)
	if _, ok := err.(netlink.LinkNotFoundError); ok || errors.Is(err, unix.ENODEV) {
		return Link{}, fmt.Errorf("link %s: %w", name, ErrNotExist)
	}
	if err != nil {
		return Link{}, err
	}
	return toLink(l), nil
}

// LinkAdd implements Kernel.
func (s *System) LinkAdd(l Link) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Kind != KindVXLAN {
		return 0, fmt.Errorf("link %s: cannot create a %q link", l.Name, l.Kind)
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: l.Name, MTU: l.MTU, HardwareAddr: net.HardwareAddr(l.MAC[:])},
		VxlanId:      int(l.VNI),
		VtepDevIndex: l.UnderlayIndex,
		SrcAddr:      l.Local.AsSlice(),
		Port:         int(l.Port),
		Learning:     l.Learning,
		UDPCSum:      true,
	}
	if err := s.h.LinkAdd(vx); err != nil {
		return 0, err
	}
	got, err := s.h.LinkByName(l.Name)
	if err != nil {
		return 0, fmt.Errorf("look up the new link: %w", err)
	}
	return got.Attrs().Index, nil
}

// LinkDel implements Kernel.
func (s *System) LinkDel(index int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.h.LinkDel(byIndex(index)); err != nil && !gone(err) {
		return err
	}
	return nil
}

// LinkSetUp implements Kernel.
func (s *System) LinkSetUp(index int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.LinkSetUp(byIndex(index))
}

// LinkStats implements Kernel.
func (s *System) LinkStats(index int) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.h.LinkByIndex(index)
	if err != nil {
		return Stats{}, err
	}
	st := l.Attrs().Statistics
	if st == nil {
		return Stats{}, fmt.Errorf("link #%d: no statistics", index)
	}
	return Stats{
		RxPackets: st.RxPackets, RxBytes: st.RxBytes, TxPackets: st.TxPackets, TxBytes: st.TxBytes,
		RxDropped: st.RxDropped, TxDropped: st.TxDropped,
	}, nil
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	a = a.Unmap()
	if a.Is4() && bits == 8*net.IPv6len {
		ones -= 8 * (net.IPv6len - net.IPv4len)
	}
	return netip.PrefixFrom(a, ones), true
}

// AddrList implements Kernel.
func (s *System) AddrList(index int) ([]netip.Prefix, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	as, err := s.h.AddrList(byIndex(index), netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		p, ok := toPrefix(a.IPNet)
		if !ok || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// AddrReplace implements Kernel.
func (s *System) AddrReplace(index int, p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &netlink.Addr{IPNet: toIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return s.h.AddrReplace(byIndex(index), a)
}

// AddrDel implements Kernel.
func (s *System) AddrDel(index int, p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.h.AddrDel(byIndex(index), &netlink.Addr{IPNet: toIPNet(p)}); err != nil && !gone(err) {
		return err
	}
	return nil
}

func (r Route) netlink() *netlink.Route {
	return &netlink.Route{
		LinkIndex: r.LinkIndex,
		Dst:       toIPNet(r.Dst),
		Gw:        r.Via.AsSlice(),
		Protocol:  tun.RouteProtocol,
		Scope:     netlink.SCOPE_UNIVERSE,
		Table:     unix.RT_TABLE_MAIN,
		Flags:     int(netlink.FLAG_ONLINK),
	}
}

// RouteList implements Kernel.
func (s *System) RouteList(index int) ([]Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	filter := &netlink.Route{LinkIndex: index, Protocol: tun.RouteProtocol, Table: unix.RT_TABLE_MAIN}
	mask := netlink.RT_FILTER_OIF | netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
	var out []Route
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := s.h.RouteListFiltered(family, filter, mask)
		if err != nil {
			return nil, err
		}
		for _, nr := range rs {
			dst, ok := toPrefix(nr.Dst)
			if !ok {
				continue
			}
			via, _ := netip.AddrFromSlice(nr.Gw)
			out = append(out, Route{Dst: dst, Via: via.Unmap(), LinkIndex: nr.LinkIndex})
		}
	}
	return out, nil
}

// RouteReplace implements Kernel.
func (s *System) RouteReplace(r Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.RouteReplace(r.netlink())
}

// RouteDel implements Kernel.
func (s *System) RouteDel(r Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.h.RouteDel(r.netlink()); err != nil && !gone(err) {
		return err
	}
	return nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// NeighList implements Kernel.
func (s *System) NeighList(index int) ([]Neigh, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Neigh
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := s.h.NeighList(index, fam)
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			ip, ok := netip.AddrFromSlice(n.IP)
			if n.LinkIndex != index || n.State&netlink.NUD_PERMANENT == 0 || !ok || len(n.HardwareAddr) != 6 {
				continue
			}
			out = append(out, Neigh{IP: ip.Unmap(), MAC: encap.MAC(n.HardwareAddr), LinkIndex: n.LinkIndex})
		}
	}
	return out, nil
}

// NeighSet implements Kernel.
func (s *System) NeighSet(n Neigh) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.NeighSet(&netlink.Neigh{
		LinkIndex:    n.LinkIndex,
		Family:       family(n.IP),
		State:        netlink.NUD_PERMANENT,
		Type:         unix.RTN_UNICAST,
		IP:           n.IP.AsSlice(),
		HardwareAddr: net.HardwareAddr(n.MAC[:]),
	})
}

// NeighDel implements Kernel.
func (s *System) NeighDel(n Neigh) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.h.NeighDel(&netlink.Neigh{LinkIndex: n.LinkIndex, Family: family(n.IP), IP: n.IP.AsSlice()})
	if err != nil && !gone(err) {
		return err
	}
	return nil
}

// FDBList implements Kernel.
func (s *System) FDBList(index int) ([]FDB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns, err := s.h.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []FDB
	for _, n := range ns {
		dst, ok := netip.AddrFromSlice(n.IP)
		if n.LinkIndex != index || !ok || len(n.HardwareAddr) != 6 {
			continue
		}
		out = append(out, FDB{MAC: encap.MAC(n.HardwareAddr), Dst: dst.Unmap(), LinkIndex: n.LinkIndex})
	}
	return out, nil
}

func (f FDB) netlink() *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    f.LinkIndex,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           f.Dst.AsSlice(),
		HardwareAddr: net.HardwareAddr(f.MAC[:]),
	}
}

// FDBSet implements Kernel.
func (s *System) FDBSet(f FDB) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.NeighSet(f.netlink())
}

// FDBDel implements Kernel.
func (s *System) FDBDel(f FDB) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.h.NeighDel(f.netlink()); err != nil && !gone(err) {
		return err
	}
	return nil
}
