// Package node is the weft daemon as a library: one host of the overlay,
// from start-up to shutdown. Start brings the node up in a fixed order
// (control socket, underlay, subnet, metrics, gossip, TUN, data path,
// routes, subnet file), Reload applies what may change while running, Status
// reports, and Wait returns once the node has stopped and everything it
// started has been taken back.
//
// The node touches the operating system only through Deps, so its tests run
// in process, on fakes, under the race detector.
package node
