// Package node is the weft daemon as a library: one host of the overlay,
// from start-up to shutdown. Start brings the node up in a fixed order
// (control socket, underlay, subnet, metrics, gossip, TUN, data path,
// routes, subnet file), Reload applies what may change while running, Status
// reports, and Wait returns once the node has stopped and everything it
// started has been taken back.
//
// What goes through Deps, so that the node's tests run in process, on
// fakes, under the race detector: the TUN device, the data-plane sockets,
// the kernel (underlay addresses, routes, links), the clock, logging and
// the service manager. What the node does itself, on ordinary sockets and
// files that tests give it in a temporary directory or on loopback: its
// HTTP listeners (metrics, pprof, the control socket), the watchdog's probe
// sockets on loopback, the gossip (package membership), and its files (the
// lease and the data-plane key in the state directory, the subnet file).
package node
