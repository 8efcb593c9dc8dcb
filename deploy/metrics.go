package deploy

import (
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
	"github.com/weftnet/weft/seal"
)

// Metric is what the dashboard, the alerts and the README may rely on of
// one metric: its type and its labels, each with the values it takes when
// they are a fixed set (nil: any value).
type Metric struct {
	Type   string // counter, gauge, histogram, summary
	Labels map[string][]string
	// Only is the flag without which the daemon does not export the
	// metric ("": always; "--datapath userspace": not on the kernel data
	// path).
	Only string
}

// Metrics is the contract between weft and what reads its /metrics: every
// weft_* metric the daemon exports (node's TestMetricsContract checks it
// against a live registry, both ways), and the go_* and process_* ones the
// dashboard uses. Label value sets come from the packages that define them.
func Metrics() map[string]Metric {
	return map[string]Metric{
		"weft_build_info":                  {"gauge", map[string][]string{"version": nil, "revision": nil, "goversion": nil}, ""},
		"weft_peers":                       {"gauge", map[string][]string{"state": router.PeerStates}, ""},
		"weft_tx_packets_total":            {"counter", nil, ""},
		"weft_tx_bytes_total":              {"counter", nil, ""},
		"weft_rx_packets_total":            {"counter", nil, ""},
		"weft_rx_bytes_total":              {"counter", nil, ""},
		"weft_dropped_packets_total":       {"counter", map[string][]string{"reason": router.DropReasons()}, ""},
		"weft_batch_size_packets":          {"histogram", map[string][]string{"direction": {"tx", "rx"}}, ""},
		"weft_offload_enabled":             {"gauge", map[string][]string{"feature": {"udp_gso", "udp_gro", "tun_vnet_hdr"}}, "--datapath userspace"},
		"weft_syscalls_total":              {"counter", map[string][]string{"op": {"tun_read", "tun_write", "sendmmsg", "recvmmsg"}}, "--datapath userspace"},
		"weft_subnet_conflicts_total":      {"counter", nil, ""},
		"weft_gossip_join_attempts_total":  {"counter", nil, ""},
		"weft_gossip_join_failures_total":  {"counter", nil, ""},
		"weft_gossip_health_score":         {"gauge", nil, ""},
		"weft_gossip_members":              {"gauge", nil, ""},
		"weft_gossip_key_errors_total":     {"counter", nil, ""},
		"weft_gossip_refused_total":        {"counter", map[string][]string{"reason": membership.RefusalReasons}, ""},
		"weft_tun_gro_fallback":            {"gauge", nil, ""},
		"weft_routes":                      {"gauge", map[string][]string{"kind": {"tunnel", "direct", "none"}}, ""},
		"weft_ready":                       {"gauge", nil, ""},
		"weft_handshakes_total":            {"counter", map[string][]string{"result": seal.HandshakeResults()}, ""},
		"weft_encrypted_peers":             {"gauge", map[string][]string{"session": {"established", "none"}}, ""},
		"weft_peers_refused":               {"gauge", map[string][]string{"reason": router.Refusals()}, ""},
		"weft_staged_packets_total":        {"counter", map[string][]string{"result": seal.StagedResults()}, ""},
		"weft_start_time_seconds":          {"gauge", nil, ""},
		"weft_datapath":                    {"gauge", map[string][]string{"mode": {"userspace", "kernel"}}, ""},
		"process_cpu_seconds_total":        {"counter", nil, ""},
		"process_resident_memory_bytes":    {"gauge", nil, ""},
		"process_virtual_memory_bytes":     {"gauge", nil, ""},
		"process_virtual_memory_max_bytes": {"gauge", nil, ""},
		"process_open_fds":                 {"gauge", nil, ""},
		"process_max_fds":                  {"gauge", nil, ""},
		"process_start_time_seconds":       {"gauge", nil, ""},
		"go_goroutines":                    {"gauge", nil, ""},
		"go_threads":                       {"gauge", nil, ""},
		"go_info":                          {"gauge", map[string][]string{"version": nil}, ""},
		"go_gc_duration_seconds":           {"summary", map[string][]string{"quantile": nil}, ""},
		"go_memstats_alloc_bytes":          {"gauge", nil, ""},
		"go_memstats_heap_inuse_bytes":     {"gauge", nil, ""},
		"go_memstats_sys_bytes":            {"gauge", nil, ""},

		"weft_bgp_session_up":                        {"gauge", map[string][]string{"neighbor": nil}, "--bgp-asn"},
		"weft_bgp_announced_prefixes":                {"gauge", nil, "--bgp-asn"},
		"weft_bgp_received_prefixes":                 {"gauge", map[string][]string{"neighbor": nil}, "--bgp-asn"},
		"weft_workers":                               {"gauge", nil, "--datapath userspace"},
		"weft_tun_multiqueue_refused":                {"gauge", nil, "--datapath userspace"},
		"weft_kernel_filter_slow_path_packets_total": {"counter", nil, "--datapath kernel"},
		"weft_session_age_seconds":                   {"gauge", map[string][]string{"peer": nil}, "--encrypt"},
		"weft_cert_expiry_seconds":                   {"gauge", map[string][]string{"cert": {"host", "ca"}}, "--ca-cert"},
		"weft_peer_tx_packets_total":                 {"counter", map[string][]string{"peer": nil}, "--per-peer-metrics"},
		"weft_peer_tx_bytes_total":                   {"counter", map[string][]string{"peer": nil}, "--per-peer-metrics"},
		"weft_peer_rx_packets_total":                 {"counter", map[string][]string{"peer": nil}, "--per-peer-metrics"},
		"weft_peer_rx_bytes_total":                   {"counter", map[string][]string{"peer": nil}, "--per-peer-metrics"},
	}
}
