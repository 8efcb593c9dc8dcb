package router

import "github.com/weftnet/weft/encap"

// DropReason says why a packet was dropped. Each is a bounded label value
// of weft_dropped_packets_total.
type DropReason uint8

// Drop reasons.
const (
	DropNoRoute       DropReason = iota // outbound: no peer owns the destination
	DropUnknownPeer                     // inbound: outer source is not a peer's underlay address
	DropSpoofed                         // inbound: inner source outside the sending peer's subnet
	DropNotLocal                        // inbound: inner destination is not in our subnet
	DropMalformed                       // not a valid IP packet / datagram
	DropTooBig                          // larger than the tunnel can carry
	DropVNIMismatch                     // encapsulation (vxlan): wrong VNI
	DropNotOurMAC                       // encapsulation (vxlan): frame not addressed to our VTEP MAC
	DropBadEtherType                    // encapsulation (vxlan): neither IPv4, IPv6 nor a control frame answered
	DropSendError                       // the kernel refused the datagram
	DropTUNWriteError                   // the TUN device refused the packet
	DropBadAuth                         // encrypted: failed authentication
	DropReplay                          // encrypted: a counter seen before, or too old for the replay window
	DropNoSession                       // encrypted: no session with the peer (yet), or an unknown session index
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNoRoute: "no_route", DropUnknownPeer: "unknown_peer", DropSpoofed: "spoofed", DropNotLocal: "not_local",
	DropMalformed: "malformed", DropTooBig: "too_big", DropVNIMismatch: "vni_mismatch", DropNotOurMAC: "not_our_mac",
	DropBadEtherType: "bad_ethertype", DropSendError: "send_error", DropTUNWriteError: "tun_write_error",
	DropBadAuth: "bad_auth", DropReplay: "replay", DropNoSession: "no_session",
}

// DropReasons lists the label values of weft_dropped_packets_total.
func DropReasons() []string { return append([]string(nil), dropNames[:]...) }

func (d DropReason) String() string {
	if d < numDropReasons {
		return dropNames[d]
	}
	return "unknown"
}

// verdictDrop is the drop reason counted for a codec's verdict other than
// encap.Deliver and encap.Reply.
func verdictDrop(v encap.Verdict) DropReason {
	switch v {
	case encap.WrongVNI:
		return DropVNIMismatch
	case encap.NotOurMAC:
		return DropNotOurMAC
	case encap.BadEtherType:
		return DropBadEtherType
	}
	return DropMalformed
}
