package fakes

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/weftnet/weft/tun"
)

// Kernel is one host's underlay interface and routes in memory (a
// node.Kernel): eth0, index 2, MTU 1500, on link with 127.0.0.0/8. It logs
// route changes on Events.
type Kernel struct {
	ev      *Events
	mu      sync.Mutex
	u       tun.Underlay
	routes  map[netip.Prefix]tun.Route
	stale   []tun.Route
	changed func()
}

// NewKernel returns a kernel whose underlay address is addr.
func NewKernel(ev *Events, addr netip.Addr) *Kernel {
	k := &Kernel{ev: ev, routes: map[netip.Prefix]tun.Route{}}
	k.SetAddr(addr)
	return k
}

// SetAddr renumbers the underlay interface to a, and tells the watcher.
func (k *Kernel) SetAddr(a netip.Addr) {
	k.mu.Lock()
	k.u = tun.Underlay{Iface: "eth0", Index: 2, MTU: 1500, Addr: a,
		OnLink: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Addrs: []netip.Addr{a}}
	changed := k.changed
	k.mu.Unlock()
	if changed != nil {
		changed()
	}
}

// SetStale makes OurRoutes report routes an earlier run left behind.
func (k *Kernel) SetStale(routes []tun.Route) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stale = slices.Clone(routes)
}

func (k *Kernel) FindUnderlay(iface string, want netip.Addr) (tun.Underlay, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	u := k.u
	if want.IsValid() && !want.IsUnspecified() {
		u.Addr = want
	}
	return u, nil
}

// WatchAddrs calls changed on every SetAddr until ctx ends.
func (k *Kernel) WatchAddrs(ctx context.Context, ifindex int, changed func()) error {
	k.mu.Lock()
	k.changed = changed
	k.mu.Unlock()
	<-ctx.Done()
	k.mu.Lock()
	k.changed = nil
	k.mu.Unlock()
	return nil
}

// Watching reports whether a WatchAddrs is running.
func (k *Kernel) Watching() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.changed != nil
}

func (k *Kernel) ReplaceRoute(r tun.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes[r.Dst] = r
	k.ev.Add("route add %s via %s", r.Dst, r.Via)
	return nil
}

func (k *Kernel) DeleteRoute(r tun.Route) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.routes, r.Dst)
	k.ev.Add("route del %s", r.Dst)
	return nil
}

// OurRoutes are the stale routes and the routes installed.
func (k *Kernel) OurRoutes() ([]tun.Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := slices.Clone(k.stale)
	for _, r := range k.routes {
		out = append(out, r)
	}
	return out, nil
}

// Routes are the routes installed, by destination.
func (k *Kernel) Routes() map[netip.Prefix]tun.Route {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.routes)
}
