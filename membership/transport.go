package membership

import (
	"errors"
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Stream bounds. memberlist reads a TCP stream's message whole before it
// looks at it: an encrypted one up to the 20 MB its length prefix claims,
// before authenticating it (so anyone who reaches the gossip port can make
// it buffer that much), a plaintext user message up to 20 MB too, and it
// handles every inbound stream on its own goroutine, with no limit on how
// many at once (only push/pulls are limited, to 128). boundedTransport
// wraps memberlist's TCP/UDP transport to bound both.
const (
	// maxInboundStreams is how many inbound streams are handled at once;
	// another is closed as soon as it is accepted (streams_full). A
	// weft host takes streams for joins and push/pulls (one every 30 s
	// from a random member, rarer in large clusters) and TCP pings when
	// UDP fails: a handful at a time.
	maxInboundStreams = 32

	// maxStreamBytes is the most a stream, inbound or outbound, may carry
	// to us; reading more fails and ends the stream (stream_too_big). The
	// largest legitimate one is a push/pull of a full member table:
	// maxMembers nodes of at most ~700 bytes (a name of MaxNameLen, 512
	// bytes of metadata, address, versions) is ~2.8 MiB.
	maxStreamBytes = 4 << 20
)

// More refusal reasons (bounds.go).
const (
	RefusedStreamsFull  = "streams_full"   // an inbound stream while maxInboundStreams are open
	RefusedStreamTooBig = "stream_too_big" // a stream that carried more than maxStreamBytes
)

var errStreamTooBig = errors.New("gossip stream exceeds its size limit")

// boundedTransport is memberlist's NetTransport with at most
// maxInboundStreams inbound streams at once and maxStreamBytes read from
// any stream.
type boundedTransport struct {
	*memberlist.NetTransport
	streams  chan net.Conn
	slots    chan struct{} // one per open inbound stream
	maxBytes int64
	refuse   func(reason string, err error)
	done     chan struct{}
	stop     sync.Once
}

var _ memberlist.NodeAwareTransport = (*boundedTransport)(nil)

// newBoundedTransport binds memberlist's transport as memberlist.Create
// would (retrying a little when port 0 picks a port whose UDP or TCP half
// is taken) and returns the port it bound.
func newBoundedTransport(bindAddr string, port int, logger *log.Logger, refuse func(string, error)) (*boundedTransport, int, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var (
		nt  *memberlist.NetTransport
		err error
	)
	for range tries {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{bindAddr}, BindPort: port, Logger: logger,
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("gossip transport on %s:%d: %w", bindAddr, port, err)
	}
	t := &boundedTransport{
		NetTransport: nt,
		streams:      make(chan net.Conn),
		slots:        make(chan struct{}, maxInboundStreams),
		maxBytes:     maxStreamBytes,
		refuse:       refuse,
		done:         make(chan struct{}),
	}
	go t.accept()
	return t, nt.GetAutoBindPort(), nil
}

// accept hands inbound streams to memberlist while there is a free slot and
// closes them otherwise.
func (t *boundedTransport) accept() {
	in := t.NetTransport.StreamCh()
	for {
		var conn net.Conn
		select {
		case conn = <-in:
		case <-t.done:
			return
		}
		select {
		case t.slots <- struct{}{}:
		default:
			conn.Close()
			t.refuse(RefusedStreamsFull, fmt.Errorf("from %v: %d streams open", conn.RemoteAddr(), cap(t.slots)))
			continue
		}
		lc := t.limit(conn, func() { <-t.slots })
		select {
		case t.streams <- lc:
		case <-t.done:
			lc.Close()
			return
		}
	}
}

// StreamCh returns the inbound streams memberlist may handle.
func (t *boundedTransport) StreamCh() <-chan net.Conn { return t.streams }

// DialTimeout dials a stream whose replies are limited to maxStreamBytes.
func (t *boundedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return t.limit(c, nil), nil
}

// DialAddressTimeout is DialTimeout for memberlist's node-aware calls.
func (t *boundedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return t.limit(c, nil), nil
}

// Shutdown shuts the transport down, then stops handing out streams. In
// that order: NetTransport.Shutdown waits for its accept loop, which may be
// handing accept a stream (memberlist keeps taking streams until its
// transport has shut down).
func (t *boundedTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.stop.Do(func() { close(t.done) })
	return err
}

func (t *boundedTransport) limit(c net.Conn, release func()) *limitedConn {
	lc := &limitedConn{Conn: c, release: release, refuse: t.refuse}
	lc.left.Store(t.maxBytes)
	return lc
}

// limitedConn fails reads past its byte limit and releases its slot once,
// on Close.
type limitedConn struct {
	net.Conn
	left    atomic.Int64
	release func() // nil for outbound streams
	refuse  func(string, error)
	once    sync.Once
	refused atomic.Bool
}

func (c *limitedConn) Read(p []byte) (int, error) {
	left := c.left.Load()
	if left <= 0 {
		if !c.refused.Swap(true) {
			c.refuse(RefusedStreamTooBig, fmt.Errorf("from %v: more than %d bytes", c.RemoteAddr(), maxStreamBytes))
		}
		return 0, errStreamTooBig
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.left.Add(-int64(n))
	return n, err
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	if c.release != nil {
		c.once.Do(c.release)
	}
	return err
}
