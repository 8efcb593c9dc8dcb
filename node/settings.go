package node

import (
	"log/slog"
	"net/netip"
	"reflect"
	"time"

	"github.com/weftnet/weft/bgp"
	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/seal"
)

// Settings is a node's validated configuration. Everything outside Live is
// fixed for the node's life; Live is what Reload may change while running.
type Settings struct {
	Name string
	// Networks are the overlay networks: one of either family, or a
	// dual-stack overlay's IPv4 and IPv6 ones, IPv4 first (config checks
	// that). Subnets are this host's subnet in each, in the same order
	// (none with AutoSubnet).
	Networks       []netip.Prefix
	Subnets        []netip.Prefix
	PublicIP       netip.Addr // invalid: discover, and follow the interface's address
	Iface          string
	Port           uint16
	Encap          encap.Kind
	VNI            uint32
	VTEPMAC        encap.MAC // zero: derived from the subnet
	GossipPort     int
	TUN            string
	MTU            int // 0: underlay MTU minus overhead
	MetricsAddr    string
	Socket         string
	DirectRouting  bool
	PerPeerMetrics bool
	Offload        bool
	// PProfAddr is where net/http/pprof is served, on a listener of its
	// own (empty: not at all); never on the metrics listener.
	PProfAddr string
	// Workers is how many forwarding workers run, each with its own TUN
	// queue and sockets (fewer if the kernel refuses multi-queue TUN).
	Workers int
	// BusyPoll is how long a worker spins for more packets after a batch
	// before it sleeps (0: not at all).
	BusyPoll time.Duration
	// PartialChecksums advertises, and uses with peers that advertise it
	// too, inner checksums left partial (membership.Meta.PartialChecksums).
	PartialChecksums bool
	// Datapath is the data path engine asked for (datapath.go): the
	// userspace one, the kernel's VXLAN device (kernel.go), or auto, the
	// kernel where it can carry the configuration. VXLANDevice is the
	// kernel VXLAN device's name (kernelvx.DefaultName).
	Datapath    DatapathMode
	VXLANDevice string

	AutoSubnet    bool         // no Subnets: lease one from each of Pools
	Pools         []lease.Pool // where each network's automatic subnet comes from, in the order of Networks
	SubnetReclaim time.Duration
	StateDir      string
	SubnetFile    string
	FlannelCompat bool

	// Encrypt seals every datagram to other weft hosts (package seal) with
	// EncryptCipher, rekeying sessions after RekeyAfter.
	Encrypt       bool
	EncryptCipher seal.Cipher
	RekeyAfter    time.Duration

	// InsecureGossip: the operator chose to run without a gossip key
	// (Live.GossipKeys empty): membership is unauthenticated.
	InsecureGossip bool
	// BGP announces our subnets to the physical network (bgp.go).
	BGP BGPSettings

	Live Live
}

// Live is the part of the configuration that changes without a restart.
type Live struct {
	LogLevel   slog.Level
	LogFormat  string
	Join       []string
	GossipKeys [][]byte // primary first
	Peers      []StaticPeer
	BGPPeers   []bgp.Neighbor // the BGP speaker's neighbours
	// PKI is the CAs this host trusts, their revocation lists, its
	// certificate and key (pki.go); nil: no CA. A reload re-reads the
	// files: a renewed certificate, a new CA bundle, a new list.
	PKI *PKI
}

// StaticPeer is a host that does not gossip (a kernel VTEP, a router).
type StaticPeer struct {
	Name string
	// Subnets are the peer's subnets: one of either family, or a
	// dual-stack peer's IPv4 and IPv6 ones, IPv4 first.
	Subnets []netip.Prefix
	IP      netip.Addr
	MAC     encap.MAC
	Port    uint16
	// Plaintext: the peer's traffic is not encrypted (encrypt=false, the
	// only way a static peer is reached under --encrypt).
	Plaintext bool
}

// fixedChanges lists, by their config key, the settings that differ between
// a and b outside Live: those need a restart.
func fixedChanges(a, b Settings) []string {
	var out []string
	check := func(name string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, name)
		}
	}
	check("name", a.Name, b.Name)
	// The lists by the names of their first (IPv4 in dual stack) and
	// second (IPv6) elements.
	check("network", family.First(a.Networks), family.First(b.Networks))
	check("subnet", [2]any{family.First(a.Subnets), a.AutoSubnet}, [2]any{family.First(b.Subnets), b.AutoSubnet}) // no subnet: automatic
	check("network (IPv6)", family.Second(a.Networks), family.Second(b.Networks))
	check("subnet (IPv6)", family.Second(a.Subnets), family.Second(b.Subnets))
	check("subnetLen/subnetMin/subnetMax", poolAt(a.Pools, 0), poolAt(b.Pools, 0))
	check("subnetLen6/subnetMin/subnetMax", poolAt(a.Pools, 1), poolAt(b.Pools, 1))
	check("publicIp", a.PublicIP, b.PublicIP)
	check("iface", a.Iface, b.Iface)
	check("port", a.Port, b.Port)
	check("encap", a.Encap, b.Encap)
	check("vni", a.VNI, b.VNI)
	check("vtepMac", a.VTEPMAC, b.VTEPMAC)
	check("gossipPort", a.GossipPort, b.GossipPort)
	check("tun", a.TUN, b.TUN)
	check("mtu", a.MTU, b.MTU)
	check("metricsAddr", a.MetricsAddr, b.MetricsAddr)
	check("socket", a.Socket, b.Socket)
	check("directRouting", a.DirectRouting, b.DirectRouting)
	check("offload", a.Offload, b.Offload)
	check("perPeerMetrics", a.PerPeerMetrics, b.PerPeerMetrics)
	check("pprofAddr", a.PProfAddr, b.PProfAddr)
	check("workers", a.Workers, b.Workers)
	check("busyPoll", a.BusyPoll, b.BusyPoll)
	check("partialChecksums", a.PartialChecksums, b.PartialChecksums)
	check("datapath", a.Datapath, b.Datapath)
	check("vxlanDevice", a.VXLANDevice, b.VXLANDevice)
	check("stateDir", a.StateDir, b.StateDir)
	check("subnetFile", a.SubnetFile, b.SubnetFile)
	check("flannelCompat", a.FlannelCompat, b.FlannelCompat)
	check("subnetReclaim", a.SubnetReclaim, b.SubnetReclaim)
	check("encrypt", a.Encrypt, b.Encrypt)
	check("encryptCipher", a.EncryptCipher, b.EncryptCipher)
	check("encryptRekeyAfter", a.RekeyAfter, b.RekeyAfter)
	check("insecureGossip", a.InsecureGossip, b.InsecureGossip)
	check("bgpAsn/bgpRouterId/bgpAnnounceNetwork", a.BGP, b.BGP)
	check("gossipKeyFile (turning encryption on or off)", len(a.Live.GossipKeys) > 0, len(b.Live.GossipKeys) > 0)
	return out
}

// poolAt is pools[i], or the zero Pool if there is none.
func poolAt(pools []lease.Pool, i int) lease.Pool {
	if i < len(pools) {
		return pools[i]
	}
	return lease.Pool{}
}
