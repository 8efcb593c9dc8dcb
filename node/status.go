package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/seal"
)

// Status is what `weft status` shows and what the control socket serves as
// JSON (GET /v1/status). It is the one status type: the CLI, the e2e tests
// and the benchmarks decode this.
type Status struct {
	Node   NodeStatus          `json:"node"`
	Peers  []router.PeerStatus `json:"peers"`
	Drops  map[string]uint64   `json:"drops"`
	Totals router.Totals       `json:"totals"`
	BGP    *BGPStatus          `json:"bgp,omitempty"` // the BGP speaker (absent without --bgp-asn)
	// Kernel is the kernel data path's VXLAN device and its entries
	// (absent on the userspace path).
	Kernel *KernelStatus `json:"kernel,omitempty"`
}

// NodeStatus is this host's part of the status.
type NodeStatus struct {
	Name       string `json:"name"`
	Network    string `json:"network"`
	Subnet     string `json:"subnet"`
	AutoSubnet bool   `json:"autoSubnet"`
	Address    string `json:"address"`
	Network6   string `json:"network6,omitempty"` // dual stack: the IPv6 network
	Subnet6    string `json:"subnet6,omitempty"`  // ... this host's IPv6 subnet
	Address6   string `json:"address6,omitempty"` // ... and its IPv6 address on the TUN
	Underlay   string `json:"underlay"`
	Iface      string `json:"iface"`
	Encap      string `json:"encap"`
	VNI        uint32 `json:"vni,omitempty"`
	VTEPMAC    string `json:"vtepMac,omitempty"`
	TUN        string `json:"tun"`
	// Datapath is the data path this host runs, userspace or kernel, and
	// DatapathReason why (the setting, or what --datapath auto found).
	Datapath       string          `json:"datapath"`
	DatapathReason string          `json:"datapathReason"`
	MTU            int             `json:"mtu"`
	Workers        int             `json:"workers"`
	Version        string          `json:"version"`
	Ready          bool            `json:"ready"`
	Started        time.Time       `json:"started"`
	UptimeSeconds  float64         `json:"uptimeSeconds"`
	Offloads       map[string]bool `json:"offloads,omitempty"`
	GossipHealth   int             `json:"gossipHealth"`
	// Encryption is the encrypted data plane (--encrypt; absent without).
	Encryption *seal.Status `json:"encryption,omitempty"`
	// Cert is this host's certificate (--ca-cert; absent without).
	Cert *CertStatus `json:"cert,omitempty"`
}

// CertStatus is this host's certificate and the CAs it trusts.
type CertStatus struct {
	Name        string    `json:"name"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the DER, hex
	NotAfter    time.Time `json:"notAfter"`
	Grants      []string  `json:"grants"` // subnets, then pools as "pool CIDR"
	Groups      []string  `json:"groups,omitempty"`
	CAs         []string  `json:"cas"` // the trusted CAs' names
}

// Peer returns the named peer's status, or nil.
func (s Status) Peer(name string) *router.PeerStatus {
	for i := range s.Peers {
		if s.Peers[i].Name == name {
			return &s.Peers[i]
		}
	}
	return nil
}

// FetchStatus asks a running daemon for its status, over the control socket
// or, with addr set, the metrics listener (host:port).
func FetchStatus(ctx context.Context, socket, addr string) (Status, error) {
	var st Status
	client := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + addr + "/v1/status"
	where := addr
	if addr == "" {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}
		url, where = "http://weft/v1/status", socket
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return st, fmt.Errorf("is weft running? cannot reach %s: %w", where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		return st, fmt.Errorf("weft at %s is starting or stopping and has no status yet; try again in a moment", where)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return st, fmt.Errorf("status from %s: %s: %s", where, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode status from %s: %w", where, err)
	}
	return st, nil
}
