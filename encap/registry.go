package encap

import (
	"fmt"
	"net/netip"
	"strings"
)

// The registry: every encapsulation weft knows, once. The configuration
// parses names with it (ParseKind, Names), node metadata carries a Kind's
// value as its encapsulation byte, the node sizes the MTU with Overhead,
// and the router builds the data path with NewCodec. Adding an
// encapsulation is a file of its own (a format value and a Codec, as
// udp.go and vxlan.go) and one line here.

// Kind names an encapsulation. Its value is the encapsulation's byte in
// node metadata (package membership): a Kind, once released, keeps its
// value for good.
type Kind uint8

// The encapsulations.
const (
	// UDP carries the inner IP packet as the whole UDP payload (flannel's udp backend).
	UDP Kind = 1
	// VXLAN carries an RFC 7348 VXLAN header and an inner Ethernet frame.
	VXLAN Kind = 2
	// None sends nothing through the tunnel: peers are reached by plain kernel routes (host-gw).
	None Kind = 3
)

// formats is the registry, indexed by Kind; index 0 is no encapsulation
// (a zero Kind is invalid). It is fixed at compile time and never written.
var formats = [...]format{
	UDP:   udpFormat,
	VXLAN: vxlanFormat,
	None:  noneFormat,
}

// none is an entry of the registry rather than the absence of one: it is
// chosen by name like the others, advertised in metadata like the others
// and shown in status, and its facts (no header, no overhead, no tunnel)
// answer the questions every other part asks of any encapsulation, so no
// caller tests for it by name. Its codec is udp's (no header): with host-gw
// the router's sockets carry nothing, and a packet the TUN hands it for a
// peer without a direct route is dropped as no_route, as before.
var noneFormat = format{
	name:    "none",
	aliases: []string{"host-gw"},
	note:    "host-gw: direct routes only",
	port:    udpPort,
	noTun:   true,
	codec:   func(Local) Codec { return plain{} },
}

// format is one registry entry: what the rest of weft needs to know of an
// encapsulation before (and besides) its data path.
type format struct {
	name    string   // as configured, printed and logged
	aliases []string // other names ParseKind accepts
	note    string   // a word on it in the --encap help, if any
	header  int      // bytes in front of the inner IP packet inside the UDP payload
	port    uint16   // the conventional UDP port
	noTun   bool     // no tunnel at all (host-gw): no socket, no overhead
	// vtep: the format carries inner Ethernet frames between virtual
	// tunnel endpoints, each with a MAC, in a network named by a VNI: the
	// metadata advertises both, peers must agree on the VNI, and a static
	// peer must give its MAC.
	vtep  bool
	codec func(Local) Codec // the data path for a local identity
}

func (k Kind) format() *format {
	if int(k) < len(formats) {
		return &formats[k]
	}
	return &formats[0]
}

// Valid reports whether k is a registered encapsulation.
func (k Kind) Valid() bool { return k.format().name != "" }

// Kinds lists the registered encapsulations in the order of their values.
func Kinds() []Kind {
	var ks []Kind
	for k := range formats {
		if formats[k].name != "" {
			ks = append(ks, Kind(k))
		}
	}
	return ks
}

// Names lists the names of the encapsulations, as in "udp, vxlan or none".
func Names() string {
	var names []string
	for _, k := range Kinds() {
		names = append(names, k.String())
	}
	return alternatives(names, " or ")
}

// Help describes the choice of encapsulation for a flag's help text: the
// names, each with its note, as in "udp, vxlan, or none (host-gw: direct
// routes only)".
func Help() string {
	var items []string
	for _, k := range Kinds() {
		item := k.String()
		if n := k.format().note; n != "" {
			item += fmt.Sprintf(" (%s)", n)
		}
		items = append(items, item)
	}
	return alternatives(items, ", or ")
}

// alternatives joins items with commas, the last two with last.
func alternatives(items []string, last string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + last + items[len(items)-1]
}

// PortHelp names the default port of each encapsulation with a tunnel, for
// a flag's help text, as in "8285 for udp, 8472 for vxlan".
func PortHelp() string {
	var parts []string
	for _, k := range Kinds() {
		if k.Tunnel() {
			parts = append(parts, fmt.Sprintf("%d for %s", k.DefaultPort(), k))
		}
	}
	return strings.Join(parts, ", ")
}

// ParseKind parses an encapsulation's name or alias, case-insensitively.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds() {
		f := k.format()
		if strings.EqualFold(s, f.name) {
			return k, nil
		}
		for _, a := range f.aliases {
			if strings.EqualFold(s, a) {
				return k, nil
			}
		}
	}
	return 0, fmt.Errorf("unknown encapsulation %q (want %s)", s, Names())
}

// String is k's name, or "encap(N)" for a value no encapsulation has.
func (k Kind) String() string {
	if !k.Valid() {
		return fmt.Sprintf("encap(%d)", uint8(k))
	}
	return k.format().name
}

// HeaderLen is the number of bytes the format puts in front of the inner
// IP packet inside the UDP payload.
func (k Kind) HeaderLen() int { return k.format().header }

// Tunnel reports whether the encapsulation carries packets through the
// underlay at all (false for none: peers by kernel routes only).
func (k Kind) Tunnel() bool { return k.Valid() && !k.format().noTun }

// HasVTEP reports whether the format carries Ethernet frames between VTEPs
// (VXLAN): a host then has a VNI and a VTEP MAC that it advertises, its
// peers must run the same VNI, and a static peer must give its MAC.
func (k Kind) HasVTEP() bool { return k.format().vtep }

// Overhead is the number of bytes the tunnel adds to an inner packet on the
// underlay: outer IP header, UDP header and the format's own header (0
// without a tunnel).
func (k Kind) Overhead(ipv6Underlay bool) int {
	if !k.Tunnel() {
		return 0
	}
	ip := ipv4Header
	if ipv6Underlay {
		ip = ipv6Header
	}
	return ip + udpHeader + k.HeaderLen()
}

// DefaultPort is the format's conventional UDP port.
func (k Kind) DefaultPort() uint16 {
	if p := k.format().port; p != 0 {
		return p
	}
	return udpPort
}

// NewCodec returns the data path of k for the local identity l (nil for an
// unregistered Kind). A Codec is immutable: when the identity changes (a
// subnet move), the caller builds another.
func (k Kind) NewCodec(l Local) Codec {
	if !k.Valid() {
		return nil
	}
	return k.format().codec(l)
}

// Local is this host's identity as an encapsulation sees it: what it puts
// in the headers it writes and what it answers for.
type Local struct {
	VNI uint32 // the VXLAN network identifier (vtep formats)
	MAC MAC    // our VTEP MAC (vtep formats)
	// Addrs are our overlay addresses, one per network (IPv4 first in dual
	// stack): answered in ARP if IPv4, in Neighbor Discovery if IPv6.
	Addrs []netip.Addr
}

// Remote is what an encapsulation knows of the peer a group of frames goes
// to.
type Remote struct {
	MAC MAC // the peer's VTEP MAC (vtep formats)
}

// Codec is an encapsulation's data path: it writes its header in front of
// outgoing packets, checks and strips it from incoming datagrams, and
// answers the control frames its format carries (ARP and Neighbor
// Discovery for VXLAN). Its methods take whole batches, so that the router
// makes one call per group of frames to a peer on the way out and one per
// received batch on the way in: the per-packet work stays in the codec's
// own loop. A Codec does no I/O and never allocates; it is safe for
// concurrent use (it is immutable).
type Codec interface {
	// HeaderLen is the number of bytes Wrap writes in front of each inner
	// packet (0 for udp).
	HeaderLen() int
	// Wrap writes the header in front of the inner IP packet of each frame
	// of a group bound for one peer: at f[off:off+HeaderLen()], with the
	// inner packet at f[off+HeaderLen():]. The bytes before off, and any
	// after the packet, are the caller's (an encrypted data plane's header
	// and tag).
	Wrap(frames [][]byte, off int, to Remote)
	// Unwrap checks each datagram (a UDP payload, plaintext) and sets its
	// verdict. For Deliver, views[i] becomes the inner IP packet (with any
	// link-layer padding still behind it); for Reply, the answer to send
	// back to the sender in place of the datagram (it may extend views[i]
	// within its capacity); for a drop, views[i] is left as it was or
	// changed, and is not to be used.
	Unwrap(views [][]byte, verdicts []Verdict)
}

// Verdict is what becomes of a received datagram, by its encapsulation.
// Every value but Deliver and Reply is a drop, which the router counts
// under its own reason label.
type Verdict uint8

// Verdicts.
const (
	Deliver      Verdict = iota // the inner packet goes on, to the router's own checks
	Reply                       // a control frame answered: send the reply back (not a drop)
	Malformed                   // not a valid datagram of the format
	WrongVNI                    // another VXLAN network
	NotOurMAC                   // a frame not addressed to our VTEP MAC
	BadEtherType                // neither IPv4, IPv6 nor a control frame we answer
	NumVerdicts
)

var verdictNames = [NumVerdicts]string{
	Deliver: "deliver", Reply: "reply", Malformed: "malformed", WrongVNI: "wrong_vni",
	NotOurMAC: "not_our_mac", BadEtherType: "bad_ethertype",
}

func (v Verdict) String() string {
	if v < NumVerdicts {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}
