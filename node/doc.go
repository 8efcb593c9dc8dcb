// Package node is the weft daemon as a library: one host of the overlay,
// from start-up to shutdown. Start brings the node up in a fixed order
// (control socket, underlay, subnet, metrics, gossip, data path, routes,
// subnet file), Reload applies what may change while running, Status
// reports, and Wait returns once the node has stopped and everything it
// started has been taken back.
//
// The data path is an engine behind the Datapath interface (datapath.go),
// chosen once at start (--datapath): the userspace one (userspace.go),
// which owns the TUN device and its queues, the router's forwarding
// workers and their UDP sockets, and is their one closer; or the kernel
// one (kernel.go), which programs the kernel's VXLAN device and its peer
// filter (package kernelvx) with the peers a router over weft0 routes,
// and keeps weft0 as the overlay network's catch-all. The control plane
// (gossip, subnet choice, peer checks, encryption handshakes, BGP,
// status) calls it per change, never per packet. Adding a data path is a
// file that implements Datapath, a mode and a case in chooseDataPath, and
// what it cannot honour in KernelObstacles' kind of list.
//
// What goes through Deps, so that the node's tests run in process, on
// fakes, under the race detector: the TUN device and the data-plane
// sockets (which the userspace engine opens through Deps.OpenTUN and
// Deps.Listen), the kernel (underlay addresses, routes, links), the
// kernel engine's VXLAN device, filter and probe (Deps.VXLAN), the clock,
// logging and the service manager. What the node does itself, on ordinary
// sockets and files that tests give it in a temporary directory or on
// loopback: its HTTP listeners (metrics, pprof, the control socket), the
// watchdog's probe sockets on loopback, the gossip (package membership),
// and its files (the lease and the data-plane key in the state directory,
// the subnet file).
package node
