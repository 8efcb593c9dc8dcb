// Package kernelvx drives the Linux kernel's VXLAN device for weft's
// kernel data path: the kernel encapsulates and decapsulates, weft's
// control plane (gossip, subnets) programs it, as flannel's vxlan backend
// does, and an nftables filter keeps what weft's userspace path
// guarantees about who may send.
//
// # The device
//
// One VXLAN device (DefaultName, "weft-vx") with weft's VNI, port (8472),
// MTU and VTEP MAC (the one the userspace VXLAN derives with
// encap.VTEPMAC, so a host keeps its MAC across data paths), learning off,
// sending from the host's underlay address over the underlay interface.
// It carries both overlay families, so a dual-stack host has one device;
// its peers must be of its underlay's family. It holds the first address
// of each of the host's subnets as a host address (10.244.1.0/32,
// fd00:244:1::/128), as flannel.1 holds its subnet's .0.
//
// # Per peer
//
// For a peer with subnet S (one per family), VTEP MAC M and underlay
// address U (Reconcile):
//
//	ip route replace S via S.first dev weft-vx onlink proto 87
//	ip neigh replace S.first lladdr M dev weft-vx nud permanent
//	bridge fdb replace M dev weft-vx dst U self permanent
//
// The kernel then needs neither ARP nor flooding: the route names the
// gateway, the neighbour entry its MAC, the FDB entry where that MAC
// lives. Reconcile reads these back from the kernel each time, so it is
// idempotent and a restart after kill -9 adopts what is there. The device
// is weft's: permanent neighbour and FDB entries no peer accounts for are
// removed, and so are routes carrying weft's protocol (tun.RouteProtocol);
// an administrator's routes through the device and the kernel's learned
// neighbour entries are left alone.
//
// # The peer filter
//
// The kernel's device accepts VXLAN from anyone. The table inet weft_vx
// (FilterTable) hooks input and, for UDP to the VXLAN port, drops and
// counts:
//   - unknown_peer: the outer source is not a peer's underlay address;
//   - spoofed: the inner IPv4 or IPv6 source is outside the sending peer's
//     subnets (a set keyed by outer source . inner source range, matched
//     on the inner packet at a fixed offset from the UDP header);
//   - not_local: the inner destination is outside this host's subnets.
//
// These are the userspace path's checks of the same names. Fast rules
// ahead of them accept what a healthy cluster sends with one hash lookup
// (the inner source masked to our subnet length, keyed with the outer
// source); what they do not take, the rules above classify, and what
// those let through counts as slow_path (FilterCounters.SlowPath). The kernel
// makes the VXLAN ones itself (a wrong VNI, a frame for another MAC,
// malformed frames), without weft's counters. See filter_linux.go for the
// rules as nft(8) lists them.
//
// # Use
//
//	k, err := kernelvx.NewSystem()
//	dev, err := kernelvx.New(k, kernelvx.Config{VNI: 1, MTU: 1450, Underlay: u.Addr, UnderlayIndex: u.Index, Subnets: subnets}, log)
//	err = dev.Ensure()           // at start, and when the configuration or our subnets change;
//	                             // errors.Is(err, kernelvx.ErrNoVXLAN): no kernel VXLAN, use the TUN
//	err = dev.Reconcile(peers)   // after Ensure, and on every membership change
//	st, err := dev.Stats()       // traffic: the device's counters
//	fc, err := dev.FilterCounters()
//	err = kernelvx.Cleanup(k, name, log) // `weft run --cleanup`, or a start in userspace mode
//
// Tests use Fake, an in-memory Kernel that records the state.
package kernelvx
