package seal

import "sync"

// The replay window is RFC 6479's ring of bitmap blocks (as WireGuard's):
// it remembers which of the last WindowSize counters below the highest one
// seen have arrived, and moving it forward clears whole blocks.
const (
	blockBits = 64
	// 65,536 bits, 8 KiB per session. Deeper than WireGuard's 8,192:
	// a peer seals with one session from several workers, each taking a
	// block of counters per batch, so a worker descheduled between taking
	// its block and sending it sends counters that the others have long
	// passed. With 8,128 that cost 3,203 and 19,196 replay drops in two
	// loaded bench runs (the second is 20261202T141059Z; ~250 k
	// datagrams/s, so a 33 ms deschedule); 65,472 covers ~260 ms.
	ringBlocks = 1024
	// WindowSize is how far behind the highest counter seen a datagram may
	// arrive and still be accepted (once).
	WindowSize = (ringBlocks - 1) * blockBits // 65,472
)

// window is a session's receive replay window. Every worker that receives
// datagrams of the session checks counters against the same window (a
// peer's flows spread over our workers), so it is guarded by its own
// mutex, taken once per datagram after the datagram is authenticated; no
// other lock is shared between workers.
type window struct {
	mu   sync.Mutex
	last uint64 // highest counter accepted
	ring [ringBlocks]uint64
}

// accept reports whether counter is new (and records it), for a datagram
// already authenticated. Counters at or above limit are refused.
func (w *window) accept(counter, limit uint64) bool {
	if counter >= limit {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	block := counter / blockBits
	if counter > w.last {
		cur := w.last / blockBits
		diff := block - cur
		if diff > ringBlocks {
			diff = ringBlocks
		}
		for i := cur + 1; i <= cur+diff; i++ {
			w.ring[i%ringBlocks] = 0
		}
		w.last = counter
	} else if w.last-counter > WindowSize {
		return false
	}
	bit := uint64(1) << (counter % blockBits)
	old := w.ring[block%ringBlocks]
	w.ring[block%ringBlocks] = old | bit
	return old&bit == 0
}
