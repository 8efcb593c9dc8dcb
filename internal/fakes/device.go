package fakes

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/tun"
)

// Device is one TUN queue in memory (a router.Device). Read returns the
// batches a test sends on In, one per call; what is written is kept
// (Packets) if the device records, copied to Out if Out is set, and
// otherwise only counted (the benchmarks' way: no allocation).
type Device struct {
	In  chan [][]byte // batches for Read, one per call
	Out chan []byte   // if not nil, a copy of each packet written (dropped when full)
	// Batch is BatchSize; Refuse makes each Write refuse that many packets
	// at its end, as a kernel that fails with EIO.
	Batch  int
	Refuse int

	record bool
	count  int // packets written, when not recording
	calls  int // Write calls
	mu     sync.Mutex
	// written and modes are what was written, and each Write's checksum
	// mode, when recording.
	written [][]byte
	modes   []tun.Checksum
	closed  chan struct{}
	once    sync.Once
}

// NewDevice returns a queue of batch 128 that records what is written if
// record is set.
func NewDevice(record bool) *Device {
	return &Device{record: record, In: make(chan [][]byte, 16), closed: make(chan struct{}), Batch: 128}
}

// Read returns the next batch sent on In, waiting for it.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case batch := <-d.In:
		return loadBatch(batch, bufs, sizes, offset), nil
	}
}

// ReadMore is Read when a batch is waiting, 0 at once when none is.
func (d *Device) ReadMore(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case batch := <-d.In:
		return loadBatch(batch, bufs, sizes, offset), nil
	default:
		return 0, nil
	}
}

func loadBatch(batch, bufs [][]byte, sizes []int, offset int) int {
	for i, p := range batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(batch)
}

// Write takes the batch (less Refuse packets at its end), one system call.
func (d *Device) Write(bufs [][]byte, offset int, mode tun.Checksum) (tun.WriteResult, error) {
	var res tun.WriteResult
	var err error
	d.calls++
	res.Syscalls = 1
	if d.Refuse > 0 {
		k := min(d.Refuse, len(bufs))
		res.Lost = k
		bufs = bufs[:len(bufs)-k]
		err = fmt.Errorf("tun write: %w", unix.EIO)
	}
	for _, b := range bufs {
		res.Packets++
		res.Bytes += len(b) - offset
	}
	if d.Out != nil {
		for _, b := range bufs {
			select {
			case d.Out <- slices.Clone(b[offset:]):
			default:
			}
		}
	}
	if !d.record {
		d.count += len(bufs)
		return res, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.modes = append(d.modes, mode)
	for _, b := range bufs {
		d.written = append(d.written, append([]byte(nil), b[offset:]...))
	}
	return res, err
}

func (d *Device) BatchSize() int      { return d.Batch }
func (d *Device) WriteFallback() bool { return false }
func (d *Device) Readable() bool      { return len(d.In) > 0 }

// Close makes Read and ReadMore return os.ErrClosed.
func (d *Device) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

// Packets are the packets written, when recording.
func (d *Device) Packets() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.written)
}

// Modes are the checksum modes of the Write calls, when recording.
func (d *Device) Modes() []tun.Checksum {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.modes)
}

// TUN is a TUN device in memory: its queues (one per queue asked for),
// its addresses, and the events of its life on Events ("tun address X"
// when an address moves, "link gone" when it closes). It is a node.TUN but
// for Queues, whose element type is the node's: see its tests.
type TUN struct {
	ev     *Events
	queues []*Device
	mu     sync.Mutex
	addrs  []netip.Prefix
	closes int
	once   sync.Once
}

// NewTUN opens a device as cfg asks: its addresses and queues of batch
// 16, each copying what is written to its Out (1024 packets deep).
func NewTUN(ev *Events, cfg tun.Config) *TUN {
	d := &TUN{ev: ev, addrs: slices.Clone(cfg.Addrs)}
	for range max(1, cfg.Queues) {
		q := NewDevice(false)
		q.In, q.Out, q.Batch = make(chan [][]byte, 64), make(chan []byte, 1024), 16
		d.queues = append(d.queues, q)
	}
	return d
}

// Queue is the device's queue i.
func (d *TUN) Queue(i int) *Device { return d.queues[i] }

// Devices are the device's queues.
func (d *TUN) Devices() []*Device { return slices.Clone(d.queues) }

// Send has queue 0 read p, a batch of its own.
func (d *TUN) Send(p []byte) { d.queues[0].In <- [][]byte{p} }

func (d *TUN) MultiQueueErr() error { return nil }
func (d *TUN) BatchSize() int       { return d.queues[0].Batch }
func (d *TUN) VNetHdr() bool        { return true }

// SetAddress replaces the address of old's family, which must be old.
func (d *TUN) SetAddress(next, old netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.addrs, func(a netip.Prefix) bool { return a.Addr().Is6() == old.Addr().Is6() })
	if i < 0 || d.addrs[i] != old {
		return fmt.Errorf("fake TUN has %v, not %s", d.addrs, old)
	}
	d.addrs[i] = next
	d.ev.Add("tun address %s", next)
	return nil
}

// Addrs are the device's addresses now.
func (d *TUN) Addrs() []netip.Prefix {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs)
}

// Close closes every queue, once, and counts the calls.
func (d *TUN) Close() error {
	d.mu.Lock()
	d.closes++
	d.mu.Unlock()
	d.once.Do(func() {
		for _, q := range d.queues {
			q.Close()
		}
		d.ev.Add("link gone")
	})
	return nil
}

// Closes is how many times Close was called.
func (d *TUN) Closes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closes
}
