package config

import (
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/weftnet/weft/bgp"
	"github.com/weftnet/weft/internal/keyfile"
	"github.com/weftnet/weft/node"
)

// BGPPeerConfig is a BGP neighbour (a top-of-rack router, a route
// reflector). On the command line: --bgp-peer addr=IP,asn=N[,port=P][,password-file=F].
type BGPPeerConfig struct {
	Addr         string `yaml:"addr"`
	ASN          string `yaml:"asn"`
	Port         int    `yaml:"port"`
	PasswordFile string `yaml:"passwordFile"`
}

// bgpPeerFlag is the repeatable --bgp-peer flag.
type bgpPeerFlag struct{ v *[]BGPPeerConfig }

func (p bgpPeerFlag) String() string { return "" }

func (p bgpPeerFlag) Set(s string) error {
	var pc BGPPeerConfig
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("want key=value, got %q", kv)
		}
		switch k {
		case "addr":
			pc.Addr = v
		case "asn":
			pc.ASN = v
		case "port":
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("port %q is not a number", v)
			}
			pc.Port = n
		case "password-file":
			pc.PasswordFile = v
		default:
			return fmt.Errorf("unknown key %q (want addr, asn, port, password-file)", k)
		}
	}
	*p.v = append(*p.v, pc)
	return nil
}

// bgpFlags declares the BGP speaker's flags.
func bgpFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.BGPASN, "bgp-asn", "", "announce this host's subnets by BGP with this local AS number (1-4294967295; default: no BGP)")
	fs.StringVar(&c.BGPRouterID, "bgp-router-id", "", "BGP router ID, an IPv4 address (default: the underlay IPv4 address)")
	fs.Var(bgpPeerFlag{&c.BGPPeers}, "bgp-peer", "BGP neighbour addr=IP,asn=N[,port=P][,password-file=F] (repeatable; the file holds the TCP MD5 password, mode 0600)")
	fs.BoolVar(&c.BGPAnnounceNetwork, "bgp-announce-network", false, "also announce the cluster network(s) as an aggregate")
}

// parseASN parses an AS number: 1-4294967295, plain (asplain) or as
// high.low (asdot); 0 and 65535 and 4294967295 are reserved (RFC 7300).
func parseASN(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if hi, lo, ok := strings.Cut(v, "."); ok && err != nil {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 == nil && err2 == nil {
			n, err = h<<16|l, nil
		}
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("not an AS number such as 64512")
	case n == 0 || n == 65535 || n == 1<<32-1:
		return 0, fmt.Errorf("AS %d is reserved", n)
	}
	return uint32(n), nil
}

// validateBGP checks the BGP speaker's settings: no key without --bgp-asn,
// a valid AS, an IPv4 router ID, each neighbour with an address, an AS, a
// port and a readable password file of mode 0600.
func validateBGP(c Config, s *node.Settings, src source) error {
	if c.BGPASN == "" {
		if c.BGPRouterID != "" || len(c.BGPPeers) > 0 || c.BGPAnnounceNetwork {
			return usagef("%s, %s and %s need %s", src.name("bgp-router-id", "bgpRouterId"), src.name("bgp-peer", "bgpPeers"),
				src.name("bgp-announce-network", "bgpAnnounceNetwork"), src.name("bgp-asn", "bgpAsn"))
		}
		return nil
	}
	asn, err := parseASN(c.BGPASN)
	if err != nil {
		return usagef("invalid %s %q: %v", src.name("bgp-asn", "bgpAsn"), c.BGPASN, err)
	}
	s.BGP = node.BGPSettings{Enabled: true, ASN: asn, AnnounceNetwork: c.BGPAnnounceNetwork}
	if c.BGPRouterID != "" {
		id, err := netip.ParseAddr(c.BGPRouterID)
		if err != nil || !id.Is4() || id.IsUnspecified() || id.IsMulticast() {
			return usagef("invalid %s %q: want an IPv4 address such as 192.0.2.1 (a BGP router ID is 32 bits, even on IPv6)", src.name("bgp-router-id", "bgpRouterId"), c.BGPRouterID)
		}
		s.BGP.RouterID = id
	}
	if len(c.BGPPeers) == 0 {
		return usagef("%s %s without %s: give at least one neighbour (addr=IP,asn=N)", src.name("bgp-asn", "bgpAsn"), c.BGPASN, src.name("bgp-peer", "bgpPeers"))
	}
	seen := map[netip.Addr]bool{}
	for i, pc := range c.BGPPeers {
		where := src.name("bgp-peer", fmt.Sprintf("bgpPeers[%d]", i))
		n, err := validateBGPPeer(pc)
		if err != nil {
			return usagef("invalid %s %s: %v", where, describeBGPPeer(pc), err)
		}
		if seen[n.Addr] {
			return usagef("invalid %s %s: the address %s is given twice", where, describeBGPPeer(pc), n.Addr)
		}
		seen[n.Addr] = true
		s.Live.BGPPeers = append(s.Live.BGPPeers, n)
	}
	return nil
}

func describeBGPPeer(pc BGPPeerConfig) string {
	d := fmt.Sprintf("addr=%s,asn=%s", pc.Addr, pc.ASN)
	if pc.Port != 0 {
		d += fmt.Sprintf(",port=%d", pc.Port)
	}
	if pc.PasswordFile != "" {
		d += ",password-file=" + pc.PasswordFile
	}
	return fmt.Sprintf("%q", d)
}

func validateBGPPeer(pc BGPPeerConfig) (bgp.Neighbor, error) {
	var n bgp.Neighbor
	a, err := netip.ParseAddr(pc.Addr)
	if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		return n, fmt.Errorf("addr %q: want the neighbour's IP address", pc.Addr)
	}
	n.Addr = a.Unmap()
	if pc.ASN == "" {
		return n, fmt.Errorf("asn is missing")
	}
	if n.ASN, err = parseASN(pc.ASN); err != nil {
		return n, fmt.Errorf("asn %q: %v", pc.ASN, err)
	}
	if pc.Port < 0 || pc.Port > 65535 {
		return n, fmt.Errorf("port %d: want 1-65535", pc.Port)
	}
	n.Port = uint16(pc.Port)
	if pc.PasswordFile != "" {
		b, err := keyfile.Read(pc.PasswordFile)
		if err != nil {
			return n, fmt.Errorf("password-file: %v", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		switch {
		case pw == "":
			return n, fmt.Errorf("password-file %s is empty", pc.PasswordFile)
		case len(pw) > 80:
			// TCP_MD5SIG_MAXKEYLEN.
			return n, fmt.Errorf("password-file %s: the password is %d bytes, the kernel takes at most 80", pc.PasswordFile, len(pw))
		case strings.ContainsAny(pw, "\n\r"):
			return n, fmt.Errorf("password-file %s: want one line", pc.PasswordFile)
		}
		n.Password = pw
	}
	return n, nil
}
