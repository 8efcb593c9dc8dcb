//go:build race

package encap

// raceEnabled: the race detector makes sync.Pool drop items at random (x/net's
// WriteBatch pools its message headers), so allocation counts mean nothing.
const raceEnabled = true
