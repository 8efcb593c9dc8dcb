package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftnet/weft/internal/family"
)

// Status reports the node, its peers and its counters.
func (n *Node) Status() Status {
	s, l, u := n.s, n.getLocal(), n.getUnderlay()
	ns := NodeStatus{
		Name: s.Name, Network: family.First(s.Networks).String(), Subnet: family.First(l.Subnets).String(), Address: localAddrFor(l, family.First(l.Subnets).Addr()).String(), AutoSubnet: s.AutoSubnet,
		Underlay: netip.AddrPortFrom(u.Addr, s.Port).String(), Iface: u.Iface,
		Encap: s.Encap.String(), TUN: s.TUN, MTU: n.mtu, Version: n.d.Version, Ready: n.ready.Load(),
		Started: n.started, UptimeSeconds: n.d.Now().Sub(n.started).Round(time.Second).Seconds(),
	}
	if net6 := family.Second(s.Networks); net6.IsValid() {
		ns.Network6, ns.Subnet6, ns.Address6 = net6.String(), prefixString(family.Second(l.Subnets)), addrString(family.AddrOf(l.Addrs, true))
	}
	if s.Encap.HasVTEP() {
		ns.VNI, ns.VTEPMAC = s.VNI, l.MAC.String()
	}
	if c := n.dpc.Load(); c != nil {
		ns.Datapath, ns.DatapathReason = string(c.Mode), c.Reason
	}
	if c := n.gossip(); c != nil {
		ns.GossipHealth = c.Health()
	}
	st := Status{Node: ns}
	n.dp.Status(&st)
	n.secureStatus(&st)
	n.bgpStatus(&st)
	n.certStatus(&st)
	return st
}

// serveStatus answers /v1/status once the node is built: until Start has
// made the data path (and from the moment shutdown begins) it answers 503,
// never reading a half-built node. The ready flag is stored after the last
// field start-up writes and loaded here before any is read, so a request
// that sees it set sees the fields complete.
func (n *Node) serveStatus(w http.ResponseWriter, _ *http.Request) {
	if !n.ready.Load() {
		http.Error(w, "starting (or stopping): no status yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(n.Status())
}

// serve serves h on ln until shutdown closes it.
func (n *Node) serve(ln net.Listener, h http.Handler, what string) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	n.serving.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error(what, "err", err)
		}
	})
	n.onStop(func() { _ = srv.Close() })
}

// MetricsAddr is where the metrics listener listens (useful with port 0).
func (n *Node) MetricsAddr() net.Addr { return n.metricsAddr }

func (n *Node) serveMetrics() error {
	ln, err := net.Listen("tcp", n.s.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener --metrics-addr %s: %w", n.s.MetricsAddr, err)
	}
	n.metricsAddr = ln.Addr()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if c := n.gossip(); !n.ready.Load() || c == nil || !c.Running() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	n.serve(ln, mux, "metrics server")
	return nil
}

// PProfAddr is where the pprof listener listens (nil without one).
func (n *Node) PProfAddr() net.Addr { return n.pprofAddr }

// servePProf serves net/http/pprof on its own listener (--pprof-addr),
// never on the metrics one, which Prometheus (and whoever reaches it)
// scrapes: profiles and command lines are for the operator only.
func (n *Node) servePProf() error {
	if n.s.PProfAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.s.PProfAddr)
	if err != nil {
		return fmt.Errorf("pprof listener --pprof-addr %s: %w", n.s.PProfAddr, err)
	}
	n.pprofAddr = ln.Addr()
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	n.serve(ln, mux, "pprof server")
	n.log.Info("serving pprof", "addr", ln.Addr().String())
	return nil
}

// claimSocket makes sure no other weft serves on path and clears a stale
// socket file a crashed run left.
func claimSocket(path string) error {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another weft is running: its control socket %s answers (stop it, or give this one its own --socket and --tun)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	return nil
}

func (n *Node) serveControl() error {
	ln, err := net.Listen("unix", n.s.Socket)
	if err != nil {
		return fmt.Errorf("control socket --socket %s: %w", n.s.Socket, err)
	}
	if err := os.Chmod(n.s.Socket, 0o660); err != nil {
		ln.Close()
		return fmt.Errorf("control socket permissions: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", n.serveStatus)
	n.onStop(func() { _ = os.Remove(n.s.Socket) })
	n.serve(ln, mux, "control socket")
	return nil
}

// GossipAddr is the address and port the node's gossip advertises.
func (n *Node) GossipAddr() netip.AddrPort { return n.gossip().LocalAddr() }
