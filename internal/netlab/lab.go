// Package netlab builds small virtual networks out of Linux network
// namespaces for end-to-end tests and benchmarks.
//
// A Lab owns a set of namespaces: one "switch" namespace that holds the
// bridges of L2 segments, and one namespace per host. Hosts are attached to
// segments with veth pairs (one end enslaved to the segment's bridge inside
// the switch namespace, the other end in the host), or linked directly to each
// other with a point-to-point veth pair. Nothing is ever created in, or routed
// to, the root namespace: veth pairs are created directly across namespaces.
//
// Everything is done with the ip(8) command ("ip -n NS ..." and
// "ip netns exec NS ..."), so no goroutine ever changes network namespace.
//
// Lab.Close removes everything the lab created and stops the processes it
// started. If the process that owns the lab dies without calling Close (a
// panic, a test timeout, SIGKILL, Ctrl-C), a small reaper process notices
// (its stdin pipe reaches EOF) and deletes the lab's namespaces and the
// processes still inside them; processes started with Host.Start also get
// SIGKILL from the kernel when their parent dies (PR_SET_PDEATHSIG).
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxNameLen is the longest namespace name netlab creates. It is kept at
// IFNAMSIZ-1 so that a namespace name can also be used as an interface name.
const MaxNameLen = 15

// DefaultStopTimeout is how long Close waits after SIGTERM before it sends
// SIGKILL to a process that is still running.
const DefaultStopTimeout = 5 * time.Second

// ipTimeout bounds each ip(8) invocation made while building the lab.
const ipTimeout = 30 * time.Second

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_]*$`)

// Lab is a set of network namespaces and links. Create one with New and
// always Close it (Close is idempotent).
type Lab struct {
	id  string // unique per run, e.g. "e2e3fa9"
	dir string // temp dir for logs and sockets
	sw  string // switch namespace name

	// StopTimeout is how long Close waits for a process to exit after
	// SIGTERM before sending SIGKILL. Defaults to DefaultStopTimeout.
	StopTimeout time.Duration

	mu      sync.Mutex
	closed  bool
	keepDir bool
	hosts   map[string]*Host
	segs    map[string]*Segment
	procs   []*Proc
	nsOrder []string // every namespace we created (or are about to), in order
	swIfSeq int
	reaperW *os.File
	reaper  *exec.Cmd
}

// New creates a lab whose names start with prefix (lowercase letters and
// digits, truncated to 6 characters) followed by a random suffix, and its
// switch namespace. Set NETLAB_KEEP=1 to keep the lab's temp directory (logs)
// after Close.
func New(prefix string) (*Lab, error) {
	p := strings.ToLower(prefix)
	p = regexp.MustCompile(`[^a-z0-9]`).ReplaceAllString(p, "")
	if p == "" {
		p = "nl"
	}
	if len(p) > 6 {
		p = p[:6]
	}
	var lab *Lab
	for attempt := 0; ; attempt++ {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("netlab: random suffix: %w", err)
		}
		id := p + hex.EncodeToString(b[:])
		if nsExists(id+"-sw") && attempt < 20 {
			continue
		}
		dir, err := os.MkdirTemp("", "netlab-"+id+"-")
		if err != nil {
			return nil, fmt.Errorf("netlab: %w", err)
		}
		lab = &Lab{
			id:          id,
			dir:         dir,
			sw:          id + "-sw",
			StopTimeout: DefaultStopTimeout,
			hosts:       map[string]*Host{},
			segs:        map[string]*Segment{},
			keepDir:     os.Getenv("NETLAB_KEEP") != "",
		}
		break
	}
	if err := lab.startReaper(); err != nil {
		os.RemoveAll(lab.dir)
		return nil, err
	}
	if err := lab.addNS(lab.sw); err != nil {
		lab.Close()
		return nil, err
	}
	return lab, nil
}

// ID is the unique name prefix of this lab's namespaces.
func (l *Lab) ID() string { return l.id }

// Dir is a temporary directory owned by the lab (process logs live here; it
// is a good place for unix sockets and config files). It is removed by Close
// unless NETLAB_KEEP is set.
func (l *Lab) Dir() string { return l.dir }

// SwitchNS is the name of the namespace that holds the segments' bridges.
func (l *Lab) SwitchNS() string { return l.sw }

// Procs returns every process started in this lab, in start order.
func (l *Lab) Procs() []*Proc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Proc(nil), l.procs...)
}

// Namespaces returns the names of every namespace the lab created.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.nsOrder...)
}

// Segment is an L2 segment: a bridge in the lab's switch namespace.
type Segment struct {
	lab    *Lab
	name   string
	bridge string
	prefix netip.Prefix
}

// Name returns the segment's name as given to Lab.Segment.
func (s *Segment) Name() string { return s.name }

// Bridge returns the bridge's interface name inside the switch namespace.
func (s *Segment) Bridge() string { return s.bridge }

// Prefix returns the segment's IP prefix.
func (s *Segment) Prefix() netip.Prefix { return s.prefix }

// Segment creates an L2 segment (a bridge inside the switch namespace).
// Addresses attached to it must lie inside prefix (an invalid/zero prefix
// disables that check).
func (l *Lab) Segment(name string, prefix netip.Prefix) (*Segment, error) {
	if !validName.MatchString(name) || len(name) > 12 {
		return nil, fmt.Errorf("netlab: segment name %q: want 1-12 chars of [a-z0-9_]", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("netlab: lab is closed")
	}
	if _, ok := l.segs[name]; ok {
		l.mu.Unlock()
		return nil, fmt.Errorf("netlab: segment %q already exists", name)
	}
	s := &Segment{lab: l, name: name, bridge: "br-" + name, prefix: prefix.Masked()}
	l.segs[name] = s
	l.mu.Unlock()

	if err := l.ipCmds(
		[]string{"-n", l.sw, "link", "add", s.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		[]string{"-n", l.sw, "link", "set", s.bridge, "up"},
	); err != nil {
		return nil, fmt.Errorf("netlab: segment %q: %w", name, err)
	}
	return s, nil
}

// Host creates a namespace named "<lab id>-<name>" with lo up.
func (l *Lab) Host(name string) (*Host, error) {
	max := MaxNameLen - len(l.id) - 1
	if !validName.MatchString(name) || len(name) > max || name == "sw" {
		return nil, fmt.Errorf("netlab: host name %q: want 1-%d chars of [a-z0-9_], not \"sw\"", name, max)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("netlab: lab is closed")
	}
	if _, ok := l.hosts[name]; ok {
		l.mu.Unlock()
		return nil, fmt.Errorf("netlab: host %q already exists", name)
	}
	h := &Host{lab: l, name: name, ns: l.id + "-" + name}
	l.hosts[name] = h
	l.mu.Unlock()

	if err := l.addNS(h.ns); err != nil {
		return nil, err
	}
	if err := l.ipCmds([]string{"-n", h.ns, "link", "set", "lo", "up"}); err != nil {
		return nil, err
	}
	return h, nil
}

// Hosts returns the lab's hosts (in no particular order).
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	var hs []*Host
	for _, h := range l.hosts {
		hs = append(hs, h)
	}
	return hs
}

// Attach connects h to seg with a veth pair: one end, named after the host,
// is enslaved to the segment's bridge in the switch namespace; the other end
// appears in h as the next free "ethN", gets addr and is brought up.
// It returns the host-side interface name.
func (h *Host) Attach(seg *Segment, addr netip.Prefix) (string, error) {
	l := h.lab
	if seg == nil || seg.lab != l {
		return "", errors.New("netlab: Attach: segment belongs to another lab")
	}
	if seg.prefix.IsValid() && !seg.prefix.Contains(addr.Addr()) {
		return "", fmt.Errorf("netlab: Attach %s: address %s is outside segment %s (%s)", h.name, addr, seg.name, seg.prefix)
	}
	ifname := h.nextIf()
	l.mu.Lock()
	l.swIfSeq++
	swName := h.name + "-" + ifname
	if len(swName) > MaxNameLen {
		swName = "v" + strconv.Itoa(l.swIfSeq)
	}
	l.mu.Unlock()
	err := l.ipCmds(
		[]string{"-n", l.sw, "link", "add", swName, "type", "veth", "peer", "name", ifname, "netns", h.ns},
		[]string{"-n", l.sw, "link", "set", swName, "master", seg.bridge},
		[]string{"-n", l.sw, "link", "set", swName, "up"},
		addrAdd(h.ns, addr, ifname),
		[]string{"-n", h.ns, "link", "set", ifname, "up"},
	)
	if err != nil {
		return "", fmt.Errorf("netlab: Attach %s to %s: %w", h.name, seg.name, err)
	}
	return ifname, nil
}

// addrAdd is the ip(8) command that gives ifname in ns the address addr. An
// IPv6 address skips duplicate address detection, so that it is usable at
// once rather than "tentative" for a second or two.
func addrAdd(ns string, addr netip.Prefix, ifname string) []string {
	args := []string{"-n", ns, "addr", "add", addr.String(), "dev", ifname}
	if addr.Addr().Is6() {
		args = append(args, "nodad")
	}
	return args
}

// Link connects two hosts directly with a veth pair (no bridge), assigns
// addr1 to h1's end and addr2 to h2's end, and brings both up. It returns the
// interface names in h1 and h2.
func (l *Lab) Link(h1, h2 *Host, addr1, addr2 netip.Prefix) (string, string, error) {
	if h1 == nil || h2 == nil || h1.lab != l || h2.lab != l {
		return "", "", errors.New("netlab: Link: hosts must belong to this lab")
	}
	if h1 == h2 {
		return "", "", errors.New("netlab: Link: cannot link a host to itself")
	}
	if1, if2 := h1.nextIf(), h2.nextIf()
	err := l.ipCmds(
		[]string{"-n", h1.ns, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", h2.ns},
		addrAdd(h1.ns, addr1, if1),
		addrAdd(h2.ns, addr2, if2),
		[]string{"-n", h1.ns, "link", "set", if1, "up"},
		[]string{"-n", h2.ns, "link", "set", if2, "up"},
	)
	if err != nil {
		return "", "", fmt.Errorf("netlab: Link %s-%s: %w", h1.name, h2.name, err)
	}
	return if1, if2, nil
}

// Close stops every process the lab started (SIGTERM, then SIGKILL after
// StopTimeout), kills any other process left inside the lab's namespaces,
// deletes the namespaces (which destroys their links and bridges) and removes
// the temp directory. It is idempotent and safe to call from t.Cleanup and
// defer at the same time.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := append([]*Proc(nil), l.procs...)
	nss := append([]string(nil), l.nsOrder...)
	timeout := l.StopTimeout
	l.mu.Unlock()
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}

	var errs []error
	// 1. Graceful stop of our processes, in parallel.
	var wg sync.WaitGroup
	for _, p := range procs {
		if p.Exited() {
			continue
		}
		wg.Add(1)
		go func(p *Proc) {
			defer wg.Done()
			// The exit status of a stopped process is not a Close error.
			_ = p.Stop(timeout)
		}(p)
	}
	wg.Wait()
	for _, p := range procs {
		if !p.Exited() {
			errs = append(errs, fmt.Errorf("netlab: %s (pid %d) did not exit", p, p.PID()))
		}
	}

	// 2. Anything else still inside our namespaces (e.g. a child of a
	// daemon) is ours too: kill it by PID.
	for _, ns := range nss {
		killNSPids(ns)
	}

	// 3. Delete namespaces: hosts first, switch last.
	for i := len(nss) - 1; i >= 0; i-- {
		ns := nss[i]
		if !nsExists(ns) {
			continue
		}
		if out, err := runIP(context.Background(), "netns", "del", ns); err != nil {
			errs = append(errs, fmt.Errorf("netlab: ip netns del %s: %v: %s", ns, err, bytes.TrimSpace(out)))
		}
	}

	// 4. Keep logs readable via Proc.Logs after the directory is gone.
	for _, p := range procs {
		p.cacheLogs()
	}

	// 5. Tell the reaper we are done: no state file means nothing to do.
	l.stopReaper()
	if !l.keepDir {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// addNS records the namespace in the reaper's state file first (so a crash
// right after creation still cleans it up), then creates it.
func (l *Lab) addNS(ns string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("netlab: lab is closed")
	}
	l.nsOrder = append(l.nsOrder, ns)
	err := l.writeStateLocked()
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if out, err := runIP(context.Background(), "netns", "add", ns); err != nil {
		return fmt.Errorf("netlab: ip netns add %s: %v: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *Lab) statePath() string { return filepath.Join(l.dir, "netlab.state") }

func (l *Lab) writeStateLocked() error {
	tmp := l.statePath() + ".tmp"
	data := strings.Join(l.nsOrder, "\n") + "\n"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		return fmt.Errorf("netlab: state file: %w", err)
	}
	if err := os.Rename(tmp, l.statePath()); err != nil {
		return fmt.Errorf("netlab: state file: %w", err)
	}
	return nil
}

// reaperScript waits for EOF on stdin (the owning process closed the pipe or
// died), then, if the state file still exists (Close did not finish), kills
// every process inside the listed namespaces and deletes them.
const reaperScript = `
cat >/dev/null
state="$1"
[ -f "$state" ] || exit 0
while read -r ns; do
	[ -n "$ns" ] || continue
	for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
done < "$state"
sleep 0.2
tac "$state" 2>/dev/null | while read -r ns; do
	[ -n "$ns" ] || continue
	ip netns del "$ns" 2>/dev/null
done
rm -f "$state"
echo "netlab reaper: cleaned up after an owner that exited without Close; logs kept in $(dirname "$state")" >&2
`

func (l *Lab) startReaper() error {
	if err := l.writeStateLocked(); err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("netlab: reaper pipe: %w", err)
	}
	cmd := exec.Command("/bin/sh", "-c", reaperScript, "netlab-reaper", l.statePath())
	cmd.Stdin = r
	cmd.Stdout = nil
	cmd.Stderr = os.Stderr
	// Own session: a Ctrl-C on the terminal must not kill the reaper.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("netlab: start reaper: %w", err)
	}
	r.Close()
	l.reaperW = w
	l.reaper = cmd
	return nil
}

func (l *Lab) stopReaper() {
	os.Remove(l.statePath())
	if l.reaperW != nil {
		l.reaperW.Close()
	}
	if l.reaper != nil {
		done := make(chan struct{})
		go func() { l.reaper.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			if l.reaper.Process != nil {
				l.reaper.Process.Kill()
			}
		}
	}
}

func (l *Lab) ipCmds(cmds ...[]string) error {
	for _, args := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
		out, err := runIP(ctx, args...)
		cancel()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

func runIP(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.WaitDelay = 2 * time.Second
	return cmd.CombinedOutput()
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

// killNSPids SIGKILLs every process inside namespace ns (all of them were
// started by this lab, directly or indirectly) and waits briefly for them.
func killNSPids(ns string) {
	if !nsExists(ns) {
		return
	}
	pids := nsPids(ns)
	if len(pids) == 0 {
		return
	}
	for _, pid := range pids {
		if pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && len(nsPids(ns)) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
}

func nsPids(ns string) []int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			// A zombie (exited, not yet reaped) still shows up; skip it.
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
				if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
					continue
				}
			}
			pids = append(pids, pid)
		}
	}
	return pids
}
