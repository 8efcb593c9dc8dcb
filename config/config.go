// Package config reads weft run's configuration, the YAML file and the
// flags over it, and validates it into node.Settings. Every error names the
// flag or key at fault and its value.
package config

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/internal/family"
	"github.com/weftnet/weft/internal/keyfile"
	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/node"
)

// Config is weft run's configuration as written: the YAML file's keys and
// the flags carry the same names (lowerCamelCase key, kebab-case flag).
type Config struct {
	Name           string       `yaml:"name" flag:"name"`
	Network        stringList   `yaml:"network" flag:"network"`
	Subnet         stringList   `yaml:"subnet" flag:"subnet"`
	PublicIP       string       `yaml:"publicIp" flag:"public-ip"`
	Iface          string       `yaml:"iface" flag:"iface"`
	Port           int          `yaml:"port" flag:"port"`
	Encap          string       `yaml:"encap" flag:"encap"`
	VNI            int          `yaml:"vni" flag:"vni"`
	VTEPMAC        string       `yaml:"vtepMac" flag:"vtep-mac"`
	GossipPort     int          `yaml:"gossipPort" flag:"gossip-port"`
	Join           []string     `yaml:"join" flag:"join"`
	TUN            string       `yaml:"tun" flag:"tun"`
	MTU            int          `yaml:"mtu" flag:"mtu"`
	MetricsAddr    string       `yaml:"metricsAddr" flag:"metrics-addr"`
	Socket         string       `yaml:"socket" flag:"socket"`
	LogLevel       string       `yaml:"logLevel" flag:"log-level"`
	LogFormat      string       `yaml:"logFormat" flag:"log-format"`
	DirectRouting  bool         `yaml:"directRouting" flag:"direct-routing"`
	Peers          []PeerConfig `yaml:"peers" flag:"peer"`
	PerPeerMetrics bool         `yaml:"perPeerMetrics" flag:"per-peer-metrics"`
	Offload        *bool        `yaml:"offload" flag:"offload"`
	PProf          bool         `yaml:"pprof" flag:"pprof"`
	PProfAddr      string       `yaml:"pprofAddr" flag:"pprof-addr"`
	Workers        *int         `yaml:"workers" flag:"workers"`
	BusyPoll       string       `yaml:"busyPoll" flag:"busy-poll"`
	PartialCsum    *bool        `yaml:"partialChecksums" flag:"partial-checksums"`
	SubnetLen      int          `yaml:"subnetLen" flag:"subnet-len"`
	SubnetLen6     int          `yaml:"subnetLen6" flag:"subnet-len6"`
	SubnetMin      stringList   `yaml:"subnetMin" flag:"subnet-min"`
	SubnetMax      stringList   `yaml:"subnetMax" flag:"subnet-max"`
	SubnetReclaim  string       `yaml:"subnetReclaim" flag:"subnet-reclaim"`
	StateDir       string       `yaml:"stateDir" flag:"state-dir"`
	SubnetFile     string       `yaml:"subnetFile" flag:"subnet-file"`
	FlannelCompat  bool         `yaml:"flannelCompat" flag:"flannel-compat"`
	GossipKeyFile  string       `yaml:"gossipKeyFile" flag:"gossip-key-file"`
	InsecureGossip bool         `yaml:"insecureGossip" flag:"insecure-gossip"`
	// The encrypted data plane (secure.go).
	Encrypt           bool   `yaml:"encrypt" flag:"encrypt"`
	EncryptCipher     string `yaml:"encryptCipher" flag:"encrypt-cipher"`
	EncryptRekeyAfter string `yaml:"encryptRekeyAfter" flag:"encrypt-rekey-after"`
	// The BGP speaker (bgp.go).
	BGPASN             string          `yaml:"bgpAsn" flag:"bgp-asn"`
	BGPRouterID        string          `yaml:"bgpRouterId" flag:"bgp-router-id"`
	BGPPeers           []BGPPeerConfig `yaml:"bgpPeers" flag:"bgp-peer"`
	BGPAnnounceNetwork bool            `yaml:"bgpAnnounceNetwork" flag:"bgp-announce-network"`
	// Certificates from a cluster CA (pki.go).
	CACert stringList `yaml:"caCert" flag:"ca-cert"`
	Cert   string     `yaml:"cert" flag:"cert"`
	Key    string     `yaml:"key" flag:"key"`
	CRL    stringList `yaml:"crl" flag:"crl"`
	PKIDir string     `yaml:"pkiDir" flag:"pki-dir"`
	// The data path engine (datapath.go).
	Datapath    string `yaml:"datapath" flag:"datapath"`
	VXLANDevice string `yaml:"vxlanDevice" flag:"vxlan-device"`
}

// PeerConfig is a static peer: a host that does not gossip (a kernel VTEP,
// a router). On the command line: --peer name=k,subnet=10.244.9.0/24,ip=192.0.2.9[,subnet6=..][,mac=..][,port=..].
// Subnet6 is a dual-stack peer's IPv6 subnet beside its IPv4 Subnet.
type PeerConfig struct {
	Name    string `yaml:"name"`
	Subnet  string `yaml:"subnet"`
	Subnet6 string `yaml:"subnet6"`
	IP      string `yaml:"ip"`
	MAC     string `yaml:"mac"`
	Port    int    `yaml:"port"`
	// Encrypt=false lets a static peer carry plaintext under --encrypt.
	Encrypt *bool `yaml:"encrypt"`
}

// stringList is a setting that takes one value or a list: a YAML string
// or sequence of strings, and a repeatable (or comma-separated) flag.
type stringList []string

// UnmarshalYAML takes a single string as a list of one; empty strings
// (subnet: "") are no value.
func (l *stringList) UnmarshalYAML(v *yaml.Node) error {
	var ss []string
	if v.Kind == yaml.ScalarNode {
		ss = []string{v.Value}
	} else if err := v.Decode(&ss); err != nil {
		return err
	}
	*l = slices.DeleteFunc(ss, func(s string) bool { return strings.TrimSpace(s) == "" })
	return nil
}

// Defaults.
const (
	defaultTUN         = "weft0"
	defaultGossipPort  = 7946
	defaultMetricsAddr = "127.0.0.1:9586"
	DefaultSocket      = "/run/weft/weft.sock"
	defaultStateDir    = "/var/lib/weft"
	defaultSubnetFile  = "/run/weft/subnet.env"
	defaultReclaim     = 24 * time.Hour
	// maxWorkers is the kernel's limit of queues on one TUN device
	// (MAX_TAP_QUEUES).
	maxWorkers = 256
)

// DefaultPProfAddr is where --pprof serves net/http/pprof: loopback, beside
// the metrics port, on a listener of its own.
const DefaultPProfAddr = "127.0.0.1:9587"

// UsageError is a problem with the command line or the config file; weft
// exits 2 for it, before touching the kernel.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &UsageError{fmt.Sprintf(format, args...)} }

// source names where a setting came from, for error messages: the flag if
// it was given on the command line, else the key in the config file.
type source struct {
	file    string
	fromArg map[string]bool // flag names given on the command line
}

func (s source) name(flagName, key string) string {
	if s.fromArg[flagName] || s.file == "" {
		return "--" + flagName
	}
	return fmt.Sprintf("%s (in %s)", key, s.file)
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.v = append(*l.v, part)
		}
	}
	return nil
}

// peerFlag is the repeatable --peer flag.
type peerFlag struct{ v *[]PeerConfig }

func (p peerFlag) String() string { return "" }

func (p peerFlag) Set(s string) error {
	var pc PeerConfig
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("want key=value, got %q", kv)
		}
		switch k {
		case "name":
			pc.Name = v
		case "subnet":
			pc.Subnet = v
		case "subnet6":
			pc.Subnet6 = v
		case "ip":
			pc.IP = v
		case "mac":
			pc.MAC = v
		case "port":
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("port %q is not a number", v)
			}
			pc.Port = n
		case "encrypt":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("encrypt %q: want true or false", v)
			}
			pc.Encrypt = &b
		default:
			return fmt.Errorf("unknown key %q (want name, subnet, subnet6, ip, mac, port, encrypt)", k)
		}
	}
	*p.v = append(*p.v, pc)
	return nil
}

// runFlags declares weft run's flags on fs, writing into c.
func runFlags(fs *flag.FlagSet, c *Config, configFile *string, check, cleanup *bool) {
	fs.StringVar(configFile, "config", "", "YAML config file (flags override its keys)")
	fs.BoolVar(check, "check", false, "validate the configuration and exit (0: valid, 2: invalid)")
	fs.BoolVar(cleanup, "cleanup", false, "remove the TUN link, the kernel VXLAN device, its filter and the routes a crashed run left behind, and exit")
	fs.StringVar(&c.Name, "name", "", "node name, unique in the cluster (default: hostname)")
	fs.Var(listFlag{(*[]string)(&c.Network)}, "network", "overlay network CIDR, the whole cluster (required); twice (or comma-separated), one IPv4 and one IPv6, for dual stack")
	fs.Var(listFlag{(*[]string)(&c.Subnet)}, "subnet", "this host's subnet CIDR inside --network, one per network (default: automatic)")
	fs.StringVar(&c.PublicIP, "public-ip", "", "underlay address to advertise (default: address of --iface, or of the default route's interface)")
	fs.StringVar(&c.Iface, "iface", "", "underlay interface (default: the one holding --public-ip, or of the default route)")
	fs.IntVar(&c.Port, "port", 0, "data-plane UDP port (default "+encap.PortHelp()+")")
	fs.StringVar(&c.Encap, "encap", "", "encapsulation: "+encap.Help()+" (default udp)")
	fs.IntVar(&c.VNI, "vni", 0, "VXLAN network identifier (default 1)")
	fs.StringVar(&c.VTEPMAC, "vtep-mac", "", "VXLAN VTEP MAC (default: derived from the subnet, stable across restarts)")
	fs.IntVar(&c.GossipPort, "gossip-port", 0, "gossip (memberlist) TCP and UDP port (default 7946)")
	fs.Var(listFlag{&c.Join}, "join", "peers to join, host[:port], comma-separated or repeated")
	fs.StringVar(&c.TUN, "tun", "", "TUN device name (default weft0)")
	fs.IntVar(&c.MTU, "mtu", 0, "overlay MTU (default: underlay MTU minus encapsulation overhead)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "address for /metrics, /healthz and /readyz (default 127.0.0.1:9586)")
	fs.StringVar(&c.Socket, "socket", "", "control socket for weft status (default /run/weft/weft.sock)")
	fs.StringVar(&c.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&c.LogFormat, "log-format", "", "text or json (default text)")
	fs.BoolVar(&c.DirectRouting, "direct-routing", false, "reach peers on the same L2 segment by plain kernel routes, no tunnel")
	fs.Var(peerFlag{&c.Peers}, "peer", "static peer name=N,subnet=CIDR,ip=ADDR[,mac=MAC][,port=P][,encrypt=false] (repeatable)")
	fs.BoolVar(&c.PerPeerMetrics, "per-peer-metrics", false, "export per-peer traffic counters (one series per peer)")
	fs.Func("workers", "forwarding workers, each with its own TUN queue and UDP sockets (default: the number of CPUs)", func(v string) error {
		n, err := strconv.Atoi(v)
		c.Workers = &n
		return err
	})
	fs.StringVar(&c.BusyPoll, "busy-poll", "", "spin this long for more packets after a batch before sleeping, e.g. 50us (default 0: off)")
	fs.Func("partial-checksums", "leave inner TCP/UDP checksums partial between weft hosts that both advertise it (default true)", func(v string) error {
		b, err := strconv.ParseBool(v)
		c.PartialCsum = &b
		return err
	})
	fs.Func("offload", "use TUN offloads, UDP GSO/GRO and batches (default true; false: one packet per syscall)", func(v string) error {
		b, err := strconv.ParseBool(v)
		c.Offload = &b
		return err
	})
	fs.BoolVar(&c.PProf, "pprof", false, "shorthand for --pprof-addr "+DefaultPProfAddr)
	fs.StringVar(&c.PProfAddr, "pprof-addr", "", "serve net/http/pprof under /debug/pprof/ on this address, its own listener; bind it to loopback (default: off)")
	fs.IntVar(&c.SubnetLen, "subnet-len", 0, "prefix length of an automatic IPv4 subnet, or of an IPv6 one in an IPv6-only overlay (default 24 for IPv4, 64 for IPv6)")
	fs.IntVar(&c.SubnetLen6, "subnet-len6", 0, "prefix length of an automatic IPv6 subnet (default 64)")
	fs.Var(listFlag{(*[]string)(&c.SubnetMin)}, "subnet-min", "lowest automatic subnet, e.g. 10.244.10.0, one per family (default: the network's first)")
	fs.Var(listFlag{(*[]string)(&c.SubnetMax)}, "subnet-max", "highest automatic subnet, e.g. 10.244.200.0, one per family (default: the network's last)")
	fs.StringVar(&c.SubnetReclaim, "subnet-reclaim", "", "how long a dead host's subnet stays reserved before it can be reused (default 24h)")
	fs.StringVar(&c.StateDir, "state-dir", "", "where the automatic subnet is kept across restarts (default /var/lib/weft)")
	fs.StringVar(&c.SubnetFile, "subnet-file", "", "subnet file other tools read, like flannel's subnet.env (default /run/weft/subnet.env)")
	fs.BoolVar(&c.FlannelCompat, "flannel-compat", false, "also write FLANNEL_* variables to the subnet file")
	fs.StringVar(&c.GossipKeyFile, "gossip-key-file", "", "file of base64 gossip encryption keys, one per line, the first used to encrypt; mode 0600, owned by weft's user (required unless --insecure-gossip; weft keygen makes one)")
	fs.BoolVar(&c.InsecureGossip, "insecure-gossip", false, "run without a gossip key: membership, subnets and addresses are unauthenticated and anyone who reaches the gossip port can join (tests only)")
	encryptionFlags(fs, c)
	datapathFlags(fs, c)
	bgpFlags(fs, c)
	pkiFlags(fs, c)
}

// loadConfig reads a YAML config file strictly: an unknown key is an error
// that names it.
func loadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, usagef("--config %q: %v", path, err)
	}
	return decodeConfig(data, path)
}

func decodeConfig(data []byte, path string) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, usagef("config file %s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return c, nil
}

// mergeFlags copies the fields whose flags were set on the command line
// from flags into c.
func mergeFlags(c *Config, flags *Config, set map[string]bool) {
	dst, src := reflect.ValueOf(c).Elem(), reflect.ValueOf(flags).Elem()
	for i := range dst.NumField() {
		if set[dst.Type().Field(i).Tag.Get("flag")] {
			dst.Field(i).Set(src.Field(i))
		}
	}
}

// Parse parses weft run's arguments: the config file, then the flags over
// it, validated. With -h it prints the flags to stderr and returns
// flag.ErrHelp. check and cleanup report --check and --cleanup (with
// --cleanup only TUN and VXLANDevice are set). It never touches the kernel.
func Parse(args []string, stderr io.Writer) (s node.Settings, check, cleanup bool, err error) {
	fs := flag.NewFlagSet("weft run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var flags Config
	var configFile string
	runFlags(fs, &flags, &configFile, &check, &cleanup)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: weft run [flags]")
			fs.PrintDefaults()
			return s, false, false, err
		}
		return s, false, false, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return s, false, false, usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var c Config
	if configFile != "" {
		if c, err = loadConfig(configFile); err != nil && !cleanup {
			return s, check, cleanup, err
		}
		// --cleanup (ExecStopPost) needs only the device name: a broken
		// config must not stop it from removing what a crash left.
	}
	mergeFlags(&c, &flags, set)
	src := source{file: configFile, fromArg: set}
	if cleanup {
		// --cleanup needs only the devices' names.
		s.TUN = cmp.Or(c.TUN, defaultTUN)
		s.VXLANDevice = cmp.Or(c.VXLANDevice, kernelvx.DefaultName)
		return s, check, cleanup, errors.Join(validIfName(src.name("tun", "tun"), s.TUN), validIfName(src.name("vxlan-device", "vxlanDevice"), s.VXLANDevice))
	}
	s, err = validate(c, src)
	return s, check, cleanup, err
}

// validate checks every setting and converts it, one concern after
// another in a fixed order (the first error found is the one reported).
// Each error names the flag (or the config key) and the value.
func validate(c Config, src source) (node.Settings, error) {
	var s node.Settings
	for _, check := range []func(Config, *node.Settings, source) error{
		validateName,
		validateNetworks,
		validatePool,
		validateUnderlay,
		validateEncap,
		validateGossip,
		validateTUN,
		validateListeners,
		validateLogging,
		validateDataPath,
		validatePProf,
		validateState,
		validateGossipKey,
		validatePeers,
		validateEncryption,
		validateEngine,
		validatePKI,
		requireGossipKey,
		validateBGP,
	} {
		if err := check(c, &s, src); err != nil {
			return s, err
		}
	}
	return s, nil
}

// bad is the error for an invalid value of a setting.
func (src source) bad(flagName, key string, value any, why string) error {
	return usagef("invalid %s %q: %s", src.name(flagName, key), fmt.Sprint(value), why)
}

// validateName checks name (default: the hostname).
func validateName(c Config, s *node.Settings, src source) error {
	s.Name = c.Name
	if s.Name == "" {
		var err error
		if s.Name, err = os.Hostname(); err != nil || s.Name == "" {
			return usagef("--name not given and the hostname is unknown")
		}
	}
	if len(s.Name) > 128 || strings.ContainsAny(s.Name, " \t\n") {
		return src.bad("name", "name", c.Name, "must be at most 128 characters without spaces")
	}
	return nil
}

// validateUnderlay checks publicIp and iface.
func validateUnderlay(c Config, s *node.Settings, src source) error {
	if c.PublicIP != "" {
		var err error
		if s.PublicIP, err = netip.ParseAddr(c.PublicIP); err != nil {
			return src.bad("public-ip", "publicIp", c.PublicIP, "not an IP address")
		}
	}
	if c.Iface != "" {
		if err := validIfName(src.name("iface", "iface"), c.Iface); err != nil {
			return err
		}
	}
	s.Iface = c.Iface
	return nil
}

// validateEncap checks encap, port, vni and vtepMac.
func validateEncap(c Config, s *node.Settings, src source) error {
	var err error
	encapName := cmp.Or(c.Encap, "udp")
	if s.Encap, err = encap.ParseKind(encapName); err != nil {
		return src.bad("encap", "encap", c.Encap, "want "+encap.Names())
	}
	switch {
	case c.Port == 0:
		s.Port = s.Encap.DefaultPort()
	case c.Port < 1 || c.Port > 65535:
		return src.bad("port", "port", c.Port, "want 1-65535")
	default:
		s.Port = uint16(c.Port)
	}
	switch {
	case c.VNI == 0:
		s.VNI = 1
	case c.VNI < 0 || c.VNI >= 1<<24:
		return src.bad("vni", "vni", c.VNI, "want 1-16777215")
	default:
		s.VNI = uint32(c.VNI)
	}
	if c.VTEPMAC != "" {
		if s.VTEPMAC, err = encap.ParseMAC(c.VTEPMAC); err != nil || s.VTEPMAC[0]&1 == 1 || s.VTEPMAC.IsZero() {
			return src.bad("vtep-mac", "vtepMac", c.VTEPMAC, "want a unicast MAC such as 02:57:0a:f4:01:00")
		}
	}
	return nil
}

// validateGossip checks gossipPort (apart from the data port) and join.
func validateGossip(c Config, s *node.Settings, src source) error {
	switch {
	case c.GossipPort == 0:
		s.GossipPort = defaultGossipPort
	case c.GossipPort < 1 || c.GossipPort > 65535:
		return src.bad("gossip-port", "gossipPort", c.GossipPort, "want 1-65535")
	default:
		s.GossipPort = c.GossipPort
	}
	if s.Encap != encap.None && s.GossipPort == int(s.Port) {
		return src.bad("gossip-port", "gossipPort", c.GossipPort, fmt.Sprintf("the same UDP port as the data plane (%d)", s.Port))
	}
	for _, j := range c.Join {
		if err := validHostPort(j); err != nil {
			return src.bad("join", "join", j, err.Error())
		}
	}
	s.Live.Join = c.Join
	return nil
}

// validateTUN checks tun and mtu (at least IPv6's minimum with an IPv6
// network).
func validateTUN(c Config, s *node.Settings, src source) error {
	s.TUN = cmp.Or(c.TUN, defaultTUN)
	if err := validIfName(src.name("tun", "tun"), s.TUN); err != nil {
		return err
	}
	minMTU := 576
	if family.Of(s.Networks, true).IsValid() {
		minMTU = 1280
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > 65535) {
		return src.bad("mtu", "mtu", c.MTU, fmt.Sprintf("want %d-65535", minMTU))
	}
	s.MTU = c.MTU
	return nil
}

// validateListeners checks metricsAddr and socket.
func validateListeners(c Config, s *node.Settings, src source) error {
	s.MetricsAddr = cmp.Or(c.MetricsAddr, defaultMetricsAddr)
	if err := validHostPort(s.MetricsAddr); err != nil || !strings.Contains(s.MetricsAddr, ":") {
		return src.bad("metrics-addr", "metricsAddr", s.MetricsAddr, "want host:port, e.g. 127.0.0.1:9586")
	}
	s.Socket = cmp.Or(c.Socket, DefaultSocket)
	return nil
}

// validateLogging checks logLevel and logFormat.
func validateLogging(c Config, s *node.Settings, src source) error {
	var err error
	if s.Live.LogLevel, err = parseLevel(cmp.Or(c.LogLevel, "info")); err != nil {
		return src.bad("log-level", "logLevel", c.LogLevel, "want debug, info, warn or error")
	}
	s.Live.LogFormat = cmp.Or(c.LogFormat, "text")
	if s.Live.LogFormat != "text" && s.Live.LogFormat != "json" {
		return src.bad("log-format", "logFormat", c.LogFormat, "want text or json")
	}
	return nil
}

// validateDataPath checks directRouting, perPeerMetrics, offload,
// partialChecksums, workers and busyPoll.
func validateDataPath(c Config, s *node.Settings, src source) error {
	s.DirectRouting = c.DirectRouting
	s.PerPeerMetrics = c.PerPeerMetrics
	s.Offload = c.Offload == nil || *c.Offload
	s.PartialChecksums = s.Offload && (c.PartialCsum == nil || *c.PartialCsum)
	s.Workers = runtime.NumCPU()
	if c.Workers != nil {
		if *c.Workers < 1 || *c.Workers > maxWorkers {
			return src.bad("workers", "workers", *c.Workers, fmt.Sprintf("want 1-%d (the kernel's limit of TUN queues)", maxWorkers))
		}
		s.Workers = *c.Workers
	}
	if !s.Offload {
		if c.Workers != nil && *c.Workers > 1 {
			return src.bad("workers", "workers", *c.Workers, "--offload=false runs one worker (one packet per system call, as flannel udp)")
		}
		s.Workers = 1 // the one-packet-per-syscall design, kept as it was
	}
	if c.BusyPoll != "" {
		var err error
		if s.BusyPoll, err = time.ParseDuration(c.BusyPoll); err != nil || s.BusyPoll < 0 || s.BusyPoll > time.Second {
			return src.bad("busy-poll", "busyPoll", c.BusyPoll, "want a duration from 0 to 1s, such as 50us")
		}
	}
	return nil
}

// validatePProf checks pprof and pprofAddr (its own listener, never the
// metrics one).
func validatePProf(c Config, s *node.Settings, src source) error {
	s.PProfAddr = c.PProfAddr
	if s.PProfAddr == "" && c.PProf {
		s.PProfAddr = DefaultPProfAddr
	}
	if s.PProfAddr != "" {
		if err := validHostPort(s.PProfAddr); err != nil || !strings.Contains(s.PProfAddr, ":") {
			return src.bad("pprof-addr", "pprofAddr", s.PProfAddr, "want host:port, e.g. "+DefaultPProfAddr)
		}
		if s.PProfAddr == s.MetricsAddr {
			return src.bad("pprof-addr", "pprofAddr", s.PProfAddr, fmt.Sprintf("the metrics address (%s): pprof has its own listener, never the metrics one", src.name("metrics-addr", "metricsAddr")))
		}
	}
	return nil
}

// validateState checks stateDir, subnetFile, flannelCompat and
// subnetReclaim.
func validateState(c Config, s *node.Settings, src source) error {
	s.StateDir = cmp.Or(c.StateDir, defaultStateDir)
	s.SubnetFile = cmp.Or(c.SubnetFile, defaultSubnetFile)
	s.FlannelCompat = c.FlannelCompat
	s.SubnetReclaim = defaultReclaim
	if c.SubnetReclaim != "" {
		var err error
		if s.SubnetReclaim, err = time.ParseDuration(c.SubnetReclaim); err != nil || s.SubnetReclaim < 0 {
			return src.bad("subnet-reclaim", "subnetReclaim", c.SubnetReclaim, "want a duration such as 24h or 90s")
		}
	}
	return nil
}

// validateGossipKey checks gossipKeyFile (read here) and insecureGossip:
// at most one of them.
func validateGossipKey(c Config, s *node.Settings, src source) error {
	if c.GossipKeyFile != "" {
		if c.InsecureGossip {
			return usagef("%s and %s: give one (a key, or knowingly none)", src.name("gossip-key-file", "gossipKeyFile"), src.name("insecure-gossip", "insecureGossip"))
		}
		var err error
		if s.Live.GossipKeys, err = readGossipKeys(c.GossipKeyFile); err != nil {
			why := err.Error()
			if errors.Is(err, os.ErrNotExist) {
				why += fmt.Sprintf("; install the cluster's gossip key there: make it once (weft keygen > %s; chmod 600 %s) and copy the same file to every host",
					c.GossipKeyFile, c.GossipKeyFile)
			}
			return src.bad("gossip-key-file", "gossipKeyFile", c.GossipKeyFile, why)
		}
	}
	s.InsecureGossip = c.InsecureGossip
	return nil
}

// validatePeers checks the static peers (peers), each on its own and their
// names unique (this host's among them).
func validatePeers(c Config, s *node.Settings, src source) error {
	names := map[string]bool{s.Name: true}
	for i, pc := range c.Peers {
		p, err := validatePeer(pc, *s)
		if err != nil {
			where := src.name("peer", fmt.Sprintf("peers[%d]", i))
			return usagef("invalid %s %s: %v", where, describePeer(pc), err)
		}
		if names[p.Name] {
			return usagef("invalid %s: name %q is used twice", src.name("peer", fmt.Sprintf("peers[%d]", i)), p.Name)
		}
		names[p.Name] = true
		s.Live.Peers = append(s.Live.Peers, p)
	}
	return nil
}

// requireGossipKey refuses a configuration with neither gossipKeyFile nor
// insecureGossip (checked after the encryption settings).
func requireGossipKey(c Config, _ *node.Settings, src source) error {
	if c.GossipKeyFile == "" && !c.InsecureGossip {
		return usagef("missing %s: gossip must be authenticated, or anyone who reaches the gossip port can join the cluster and claim subnets. "+
			"Make a key once (weft keygen > /etc/weft/gossip.key; chmod 600 /etc/weft/gossip.key), copy the same file to every host, "+
			"and give --gossip-key-file /etc/weft/gossip.key (YAML gossipKeyFile: /etc/weft/gossip.key); "+
			"or knowingly run with unauthenticated gossip: --insecure-gossip (YAML insecureGossip: true)",
			src.name("gossip-key-file", "gossipKeyFile"))
	}
	return nil
}

// validateNetworks checks network and subnet: one or two networks, at most
// one per family (IPv4 first in Settings), and a subnet inside each, or
// none at all (automatic).
func validateNetworks(c Config, s *node.Settings, src source) error {
	netName := src.name("network", "network")
	bad := func(flagName, key, value, why string) error {
		return usagef("invalid %s %q: %s", src.name(flagName, key), value, why)
	}
	if len(c.Network) == 0 {
		return usagef("missing %s: the overlay network CIDR, e.g. 10.244.0.0/16", netName)
	}
	if len(c.Network) > 2 {
		return bad("network", "network", c.Network[2], "at most two networks: one IPv4 and one IPv6")
	}
	var nets []netip.Prefix
	for _, v := range c.Network {
		p, err := parseCIDR(v)
		if err != nil {
			return bad("network", "network", v, err.Error())
		}
		if len(nets) == 1 && nets[0].Addr().Is6() == p.Addr().Is6() {
			return bad("network", "network", v, fmt.Sprintf("a second %s network beside %s: give one network per family", familyName(p), nets[0]))
		}
		nets = append(nets, p)
	}
	if len(nets) == 2 && nets[0].Addr().Is6() {
		nets[0], nets[1] = nets[1], nets[0]
	}
	s.Networks = nets
	if len(c.Subnet) == 0 {
		s.AutoSubnet = true
		return nil
	}
	var subs [2]netip.Prefix // by network
	for _, v := range c.Subnet {
		p, err := parseCIDR(v)
		if err != nil {
			return bad("subnet", "subnet", v, err.Error())
		}
		i := slices.IndexFunc(nets, func(n netip.Prefix) bool { return n.Addr().Is6() == p.Addr().Is6() })
		switch {
		case i < 0:
			return bad("subnet", "subnet", v, fmt.Sprintf("an %s subnet, but the overlay has no %s network (%s %s)", familyName(p), familyName(p), netName, joinPrefixes(nets)))
		case subs[i].IsValid():
			return bad("subnet", "subnet", v, fmt.Sprintf("a second %s subnet beside %s: give one subnet per network", familyName(p), subs[i]))
		case !inside(p, nets[i]):
			return bad("subnet", "subnet", v, fmt.Sprintf("not inside the network %s", nets[i]))
		}
		subs[i] = p
	}
	for i, n := range nets {
		if !subs[i].IsValid() {
			return usagef("missing %s for the network %s: give a subnet for each network, or none (automatic)", src.name("subnet", "subnet"), n)
		}
	}
	s.Subnets = subs[:len(nets)]
	return nil
}

func familyName(p netip.Prefix) string {
	if p.Addr().Is6() {
		return "IPv6"
	}
	return "IPv4"
}

func joinPrefixes(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return strings.Join(out, ", ")
}

// validatePool checks subnetLen, subnetLen6, subnetMin and subnetMax (used
// when no subnet is given): a pool per network, each bound applied to the
// network of its family.
func validatePool(c Config, s *node.Settings, src source) error {
	type pool struct {
		dst      *lease.Pool
		net      netip.Prefix
		bits     int
		lenFlag  string
		lenKey   string
		lenValue int
		min, max string
	}
	network := s.Networks[0]
	s.Pools = make([]lease.Pool, len(s.Networks))
	pools := []*pool{{dst: &s.Pools[0], net: network, bits: c.SubnetLen, lenFlag: "subnet-len", lenKey: "subnetLen", lenValue: c.SubnetLen}}
	switch {
	case len(s.Networks) == 2:
		pools = append(pools, &pool{dst: &s.Pools[1], net: s.Networks[1], bits: c.SubnetLen6, lenFlag: "subnet-len6", lenKey: "subnetLen6", lenValue: c.SubnetLen6})
	case network.Addr().Is6() && c.SubnetLen6 != 0:
		// An IPv6-only overlay takes either.
		pools[0].bits, pools[0].lenFlag, pools[0].lenKey, pools[0].lenValue = c.SubnetLen6, "subnet-len6", "subnetLen6", c.SubnetLen6
	case c.SubnetLen6 != 0:
		return usagef("invalid %s \"%d\": the overlay has no IPv6 network (%s %s)", src.name("subnet-len6", "subnetLen6"), c.SubnetLen6, src.name("network", "network"), network)
	}
	for _, b := range []struct {
		flag, key string
		vs        []string
		max       bool
	}{{"subnet-min", "subnetMin", c.SubnetMin, false}, {"subnet-max", "subnetMax", c.SubnetMax, true}} {
		for _, raw := range b.vs {
			v := raw
			if p, err := netip.ParsePrefix(v); err == nil {
				v = p.Addr().String()
			}
			a, err := netip.ParseAddr(v)
			if err != nil {
				return usagef("invalid %s %q: not an address such as %s", src.name(b.flag, b.key), raw, network.Addr())
			}
			i := slices.IndexFunc(pools, func(p *pool) bool { return p.net.Addr().Is6() == a.Is6() })
			if i < 0 {
				// Outside the one network: the pool's own check says so.
				i = 0
			}
			dst := &pools[i].min
			if b.max {
				dst = &pools[i].max
			}
			if *dst != "" {
				return usagef("invalid %s %q: a second bound of its family beside %q", src.name(b.flag, b.key), raw, *dst)
			}
			*dst = raw
			addr := &pools[i].dst.Min
			if b.max {
				addr = &pools[i].dst.Max
			}
			*addr = a
		}
	}
	for _, p := range pools {
		bits := p.bits
		if bits == 0 {
			bits = 24
			if p.net.Addr().Is6() {
				bits = 64
			}
			if bits <= p.net.Bits() {
				bits = p.net.Addr().BitLen()
			}
		}
		p.dst.Network, p.dst.Bits = p.net, bits
		if err := p.dst.Validate(); err != nil {
			var pe *lease.PoolError
			what, val := src.name(p.lenFlag, p.lenKey), fmt.Sprint(p.lenValue)
			if errors.As(err, &pe) {
				switch pe.Field {
				case lease.FieldMin:
					what, val = src.name("subnet-min", "subnetMin"), p.min
				case lease.FieldMax:
					what, val = src.name("subnet-max", "subnetMax"), p.max
				}
			}
			return usagef("invalid %s %q: %v", what, val, err)
		}
	}
	return nil
}

// readGossipKeys reads gossip keys: base64, one per line, blank lines and
// lines starting with # ignored. The first key encrypts; all decrypt. The
// file must pass keyfile.Check (a regular file of ours, mode 0600).
func readGossipKeys(path string) ([][]byte, error) {
	data, err := keyfile.Read(path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d is not base64", i+1)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("line %d: key is %d bytes, want 16, 24 or 32 (weft keygen makes one)", i+1, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in the file")
	}
	return keys, nil
}

func describePeer(pc PeerConfig) string {
	d := fmt.Sprintf("name=%s,subnet=%s,ip=%s,mac=%s", pc.Name, pc.Subnet, pc.IP, pc.MAC)
	if pc.Subnet6 != "" {
		d = fmt.Sprintf("name=%s,subnet=%s,subnet6=%s,ip=%s,mac=%s", pc.Name, pc.Subnet, pc.Subnet6, pc.IP, pc.MAC)
	}
	return fmt.Sprintf("%q", d)
}

// peerSubnets checks a static peer's subnet (either family) and its
// optional IPv6 subnet6 (dual stack) against our networks, and lists them.
func peerSubnets(sub netip.Prefix, raw6 string, s node.Settings) ([]netip.Prefix, error) {
	in := func(p netip.Prefix) error {
		if n := family.Of(s.Networks, p.Addr().Is6()); n.IsValid() {
			if !inside(p, n) {
				return fmt.Errorf("subnet %s is not inside the network %s", p, n)
			}
			return nil
		}
		return fmt.Errorf("subnet %s is not inside the network %s", p, family.First(s.Networks))
	}
	if err := in(sub); err != nil {
		return nil, err
	}
	if raw6 == "" {
		return []netip.Prefix{sub}, nil
	}
	sub6, err := parseCIDR(raw6)
	if err != nil {
		return nil, fmt.Errorf("subnet6: %v", err)
	}
	if !sub6.Addr().Is6() || !sub.Addr().Is4() {
		return nil, fmt.Errorf("subnet6 %s: want an IPv6 subnet beside an IPv4 subnet", sub6)
	}
	if err := in(sub6); err != nil {
		return nil, err
	}
	return []netip.Prefix{sub, sub6}, nil
}

func validatePeer(pc PeerConfig, s node.Settings) (node.StaticPeer, error) {
	var p node.StaticPeer
	var err error
	if p.Name = pc.Name; p.Name == "" {
		return p, errors.New("name is missing")
	}
	sub, err := parseCIDR(pc.Subnet)
	if err != nil {
		return p, fmt.Errorf("subnet: %v", err)
	}
	if p.Subnets, err = peerSubnets(sub, pc.Subnet6, s); err != nil {
		return p, err
	}
	if p.IP, err = netip.ParseAddr(pc.IP); err != nil {
		return p, fmt.Errorf("ip %q is not an IP address", pc.IP)
	}
	switch {
	case pc.MAC != "":
		if p.MAC, err = encap.ParseMAC(pc.MAC); err != nil {
			return p, err
		}
	case s.Encap.HasVTEP():
		return p, fmt.Errorf("mac is required with encap %s (the peer's VTEP MAC)", s.Encap)
	}
	p.Port = s.Port
	if pc.Port != 0 {
		if pc.Port < 1 || pc.Port > 65535 {
			return p, fmt.Errorf("port %d: want 1-65535", pc.Port)
		}
		p.Port = uint16(pc.Port)
	}
	return p, nil
}

// parseCIDR parses a CIDR that must be a network address (no host bits).
func parseCIDR(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return p, errors.New("not a CIDR such as 10.244.0.0/16")
	}
	if p.Masked() != p {
		return p, fmt.Errorf("host bits set (did you mean %s?)", p.Masked())
	}
	return p, nil
}

func inside(sub, net netip.Prefix) bool {
	return sub.Bits() >= net.Bits() && net.Contains(sub.Addr())
}

func validIfName(what, name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:") || name == "." || name == ".." {
		return usagef("invalid %s %q: want an interface name of 1-15 characters without '/', ':' or spaces", what, name)
	}
	return nil
}

func validHostPort(v string) error {
	host, port := v, ""
	if h, p, err := net.SplitHostPort(v); err == nil {
		host, port = h, p
	} else if strings.Count(v, ":") == 1 {
		return fmt.Errorf("not host[:port]: %v", err)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want 1-65535", port)
		}
	}
	if host == "" && port == "" {
		return errors.New("empty address")
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}
