// Package fakes holds in-memory stand-ins for what weft's data path and
// node take from the operating system, for tests only (as wireguard-go's
// tun/tuntest and conn/bindtest): TUN queues and devices (Device, TUN),
// datagram sockets, alone or on an in-memory underlay (Socket, Hub), the
// kernel's underlay address and routes (Kernel), and an ordered log of
// what they saw (Events). Production code never imports it.
//
// The fakes import no package of weft's that imports them back (router,
// node): they satisfy router.Device, router.Conn, node.Socket and
// node.Kernel by their method sets, so that a package's own (internal)
// tests can use them; where an interface names a type of the consumer's
// (node.TUN's Queues returns router.Devices), the consumer's test adapts.
package fakes

import (
	"fmt"
	"slices"
	"sync"
)

// Events is the order in which fakes saw things happen (a TUN's address
// moves and removal, a kernel's routes, and whatever a test adds).
type Events struct {
	mu  sync.Mutex
	log []string
}

// Add appends an event.
func (e *Events) Add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

// List returns the events so far, oldest first.
func (e *Events) List() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}
