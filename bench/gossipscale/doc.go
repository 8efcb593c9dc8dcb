// Package gossipscale benchmarks weft's control plane at scale: many
// membership.Cluster instances (default 200) in one process on 127.0.0.1,
// with production memberlist timings (DefaultLANConfig), measuring how
// long the cluster takes to converge, to detect a crashed host and to see
// a graceful leave. It has no non-test code; see gossipscale_test.go and
// the "Control plane at scale" section of bench/README.md.
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 20m ./bench/gossipscale
//	GOSSIP_NODES=50 go test -run '^$' -bench . -benchtime 1x ./bench/gossipscale
package gossipscale
