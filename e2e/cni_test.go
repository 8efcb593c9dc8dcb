package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// The CNI end-to-end test: weft as the CNI network of three namespace hosts,
// cnitool (github.com/containernetworking/cni/cnitool, built by .ci/run and
// make e2e into bin/tools) as the runtime, Debian's reference plugins
// (containernetworking-plugins: bridge, host-local, portmap) as delegates.
// A container is a network namespace of the lab; cnitool runs in its host's
// namespace, so the veth's host end and the bridge land there.

const (
	cniNet   = "weft"   // the generated conflist: weft + portmap, CNI 1.0.0
	cniNet11 = "weft11" // weft alone, CNI 1.1.0 (STATUS; delegation to 1.0.0 plugins)
)

// cniHost is one weft host's CNI set-up, all of it under the lab directory.
type cniHost struct {
	n       *node
	dir     string
	netDir  string // NETCONFPATH
	dataDir string // the weft plugin's dataDir
	ipamDir string // host-local's dataDir
	varLib  string // bind-mounted on /var/lib for cnitool: libcni's cache (/var/lib/cni)
	conf    map[string][]byte
}

type container struct {
	name     string
	h        *cniHost
	ns       *netlab.Host
	path     string // /run/netns/<ns>
	network  string
	ip       netip.Addr
	ip6      netip.Addr // on a dual-stack host: the IPv6 address
	hostVeth string
}

// cniEnv is what the test needs from the machine.
type cniEnv struct {
	cnitool   string
	pluginDir string
	cniPath   string // weft first, then the reference plugins
}

func findCNIEnv(t *testing.T, dir string) cniEnv {
	t.Helper()
	netlab.RequireTools(t, "iptables", "tcpdump", "unshare", "mount")
	var e cniEnv
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{os.Getenv("CNITOOL"), filepath.Join(root, "bin/tools/cnitool")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			e.cnitool = p
			break
		}
	}
	if e.cnitool == "" {
		if p, err := exec.LookPath("cnitool"); err == nil {
			e.cnitool = p
		}
	}
	if e.cnitool == "" {
		t.Fatal("cnitool not found (CNITOOL, bin/tools/cnitool, PATH): make e2e builds it, or GOBIN=$PWD/bin/tools go install github.com/containernetworking/cni/cnitool@v1.3.1")
	}
	for _, d := range []string{os.Getenv("CNI_PLUGIN_DIR"), "/usr/lib/cni", "/opt/cni/bin"} {
		if d == "" {
			continue
		}
		ok := true
		for _, p := range []string{"bridge", "host-local", "portmap"} {
			if _, err := os.Stat(filepath.Join(d, p)); err != nil {
				ok = false
			}
		}
		if ok {
			e.pluginDir = d
			break
		}
	}
	if e.pluginDir == "" {
		t.Fatal("CNI reference plugins (bridge, host-local, portmap) not found in /usr/lib/cni or /opt/cni/bin: apt-get install containernetworking-plugins")
	}
	// The runtime finds weft as "weft" in its plugin path: a symlink to
	// the binary under test, as make install and the package do.
	bin := filepath.Join(dir, "cni-bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(weftBin, filepath.Join(bin, "weft")); err != nil {
		t.Fatal(err)
	}
	e.cniPath = bin + ":" + e.pluginDir
	return e
}

// newCNIHost writes n's conflists: the one `weft cni conflist` prints
// (pointed at this test's files), and a 1.1.0 list of weft alone. Both send
// host-local's store to ipamDir.
func newCNIHost(t *testing.T, c *cluster, n *node) *cniHost {
	t.Helper()
	dir := filepath.Join(c.lab.Dir(), "cni-"+n.name)
	h := &cniHost{n: n, dir: dir, netDir: filepath.Join(dir, "net.d"), dataDir: filepath.Join(dir, "weft"),
		ipamDir: filepath.Join(dir, "ipam"), varLib: filepath.Join(dir, "varlib"), conf: map[string][]byte{}}
	for _, d := range []string{h.netDir, filepath.Join(h.varLib, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	subnetFile := n.files.SubnetFile
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, weftBin, "cni", "conflist", "--name", cniNet, "--cni-version", "1.0.0",
		"--subnet-file", subnetFile, "--socket", n.sock, "--data-dir", h.dataDir).Output()
	if err != nil {
		t.Fatalf("weft cni conflist: %v", err)
	}
	var list map[string]any
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("weft cni conflist: %v\n%s", err, out)
	}
	plugins := list["plugins"].([]any)
	weft := plugins[0].(map[string]any)
	if weft["type"] != "weft" || plugins[1].(map[string]any)["type"] != "portmap" {
		t.Fatalf("weft cni conflist: want weft then portmap:\n%s", out)
	}
	weft["ipam"] = map[string]any{"dataDir": h.ipamDir}
	h.writeConf(t, cniNet, list)
	h.conf[cniNet] = mustJSON(t, map[string]any{"cniVersion": list["cniVersion"], "name": cniNet,
		"type": "weft", "subnetFile": subnetFile, "socket": n.sock, "dataDir": h.dataDir, "ipam": weft["ipam"]})
	w11 := map[string]any{"type": "weft", "subnetFile": subnetFile, "socket": n.sock, "dataDir": h.dataDir,
		"ipam": map[string]any{"dataDir": h.ipamDir}}
	h.writeConf(t, cniNet11, map[string]any{"cniVersion": "1.1.0", "name": cniNet11, "plugins": []any{w11}})
	w11["name"], w11["cniVersion"] = cniNet11, "1.1.0"
	h.conf[cniNet11] = mustJSON(t, w11)
	return h
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *cniHost) writeConf(t *testing.T, name string, list any) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(h.netDir, name+".conflist"), mustJSON(t, list), 0o644); err != nil {
		t.Fatal(err)
	}
}

// cnitool runs cnitool verb network nspath in the host's namespace, in a
// mount namespace of its own whose /var/lib is h.varLib: libcni keeps its
// result cache in /var/lib/cni, which must not be the machine's.
func (h *cniHost) cnitool(ctx context.Context, e cniEnv, verb, network, nspath string) ([]byte, error) {
	script := `mount --bind "$1" /var/lib && shift && exec "$@"`
	cmd := h.n.host.Command(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		h.varLib, e.cnitool, verb, network, nspath)
	cmd.Env = append(os.Environ(), "CNI_PATH="+e.cniPath, "NETCONFPATH="+h.netDir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("[%s] cnitool %s %s %s: %w: %s%s", h.n.name, verb, network, nspath, err,
			bytes.TrimSpace(stderr.Bytes()), bytes.TrimSpace(stdout.Bytes()))
	}
	return stdout.Bytes(), nil
}

// plugin runs the weft plugin directly, as a runtime does, and returns its
// stdout and exit code.
func (h *cniHost) plugin(ctx context.Context, e cniEnv, verb, network, containerID, nspath string) ([]byte, int, error) {
	cmd := h.n.host.Command(ctx, weftBin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+verb, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+nspath,
		"CNI_IFNAME=eth0", "CNI_PATH="+e.cniPath)
	cmd.Stdin = bytes.NewReader(h.conf[network])
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.Bytes(), ee.ExitCode(), nil
	}
	if err != nil {
		return nil, -1, fmt.Errorf("[%s] weft plugin %s: %w: %s", h.n.name, verb, err, stderr.String())
	}
	return stdout.Bytes(), 0, nil
}

// addContainer makes a container namespace next to h and adds it to network.
func addContainer(t *testing.T, ctx context.Context, c *cluster, e cniEnv, h *cniHost, name, network string) *container {
	t.Helper()
	ns, err := c.lab.Host(name)
	if err != nil {
		t.Fatal(err)
	}
	ct := &container{name: name, h: h, ns: ns, path: filepath.Join("/run/netns", ns.NS()), network: network}
	out, err := h.cnitool(ctx, e, "add", network, ct.path)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	want := 1
	if h.n.subnet6.IsValid() {
		want = 2 // an address of each family
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != want {
		t.Fatalf("cnitool add %s: result %s: %v (want %d addresses)", name, out, err, want)
	}
	pfx, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	ct.ip = pfx.Addr()
	if want == 2 {
		pfx6, err := netip.ParsePrefix(res.IPs[1].Address)
		if err != nil {
			t.Fatal(err)
		}
		ct.ip6 = pfx6.Addr()
		if !h.n.subnet6.Contains(ct.ip6) || ct.ip6 == h.n.overlay6 || ct.ip6 == h.n.overlay6.Next() {
			t.Fatalf("container %s got %s: want an address of %s other than weft0's and the bridge's", name, pfx6, h.n.subnet6)
		}
	}
	if !h.n.subnet.Contains(ct.ip) || ct.ip == h.n.overlay || ct.ip == h.n.overlay.Next() {
		t.Fatalf("container %s got %s: want an address of %s other than weft0's and the bridge's", name, pfx, h.n.subnet)
	}
	for _, i := range res.Interfaces {
		if i.Sandbox == "" && i.Name != "cni0" {
			ct.hostVeth = i.Name
		}
	}
	if ct.hostVeth == "" {
		t.Fatalf("cnitool add %s: no host veth in %s", name, out)
	}
	t.Logf("container %s on %s: %s %s (veth %s, CNI %s)", name, h.n.name, pfx, addrString(ct.ip6), ct.hostVeth, res.CNIVersion)
	return ct
}

func (ct *container) ipamFile() string {
	return filepath.Join(ct.h.ipamDir, ct.network, ct.ip.String())
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func dirNames(p string) []string {
	ents, _ := os.ReadDir(p)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// rootState is what the test must leave as it found in the root namespace.
func rootState(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nat, err := exec.CommandContext(ctx, "iptables", "-t", "nat", "-S").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -t nat -S: %v: %s", err, nat)
	}
	_, varLibCNI := os.Stat("/var/lib/cni")
	return fmt.Sprintf("iptables -t nat -S:\n%s/var/lib/cni exists: %v\n", nat, !errors.Is(varLibCNI, fs.ErrNotExist))
}

// capture runs tcpdump on ifname in h until it has seen count packets
// matching filter, and returns its output lines.
func capture(t *testing.T, h *netlab.Host, ifname, filter string, count int, traffic func()) string {
	t.Helper()
	p := startTcpdump(t, h, ifname, 10*time.Second, "-n", "-l", "-c", fmt.Sprint(count), filter)
	traffic()
	if err := p.Wait(10 * time.Second); err != nil {
		_ = p.Kill()
		t.Fatalf("tcpdump on %s (%s) did not see %d packets: %v\n%s", h.Name(), filter, count, err, p.Logs())
	}
	return p.Logs()
}

// pingContainers pings, from each source, every destination ok allows: the first
// reply may take 5 s, then 3 of 3. Sources run in parallel.
func pingContainers(t *testing.T, ctx context.Context, srcs []*container, dsts func(src *container) []netip.Addr) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(srcs))
	for i, src := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, dst := range dsts(src) {
				if err := pollUntil(time.Now().Add(5*time.Second), func() error {
					res, err := src.ns.Ping(ctx, dst, 1)
					if err == nil && res.Received != 1 {
						err = fmt.Errorf("no reply")
					}
					return err
				}); err != nil {
					errs[i] = errors.Join(errs[i], fmt.Errorf("container %s (%s) -> %s never answered: %w", src.name, src.ip, dst, err))
					continue
				}
				res, err := src.ns.Ping(ctx, dst, 3)
				if err == nil && res.Received != 3 {
					err = fmt.Errorf("%v\n%s", res, res.Output)
				}
				if err != nil {
					errs[i] = errors.Join(errs[i], fmt.Errorf("container %s (%s) -> %s: %w", src.name, src.ip, dst, err))
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestCNI: two containers on each of three weft hosts reach each other,
// their host's weft0, TCP flows between hosts, masquerading covers only
// what leaves the cluster network, DEL and CHECK work, ADD is refused
// while the daemon is down, and connectivity returns after a restart.
func TestCNI(t *testing.T) {
	netlab.RequireRoot(t)
	before := rootState(t)
	t.Cleanup(func() { // runs after the lab is gone
		if after := rootState(t); after != before {
			t.Errorf("the root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	c := newCluster(t, "a", "b", "c")
	e := findCNIEnv(t, c.lab.Dir())
	// x: a host on the underlay that is not part of the overlay.
	x, err := c.lab.Host("x")
	if err != nil {
		t.Fatal(err)
	}
	xAddr := netip.MustParseAddr("192.168.50.100")
	if _, err := x.Attach(c.seg, netip.PrefixFrom(xAddr, 24)); err != nil {
		t.Fatal(err)
	}
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	hosts := map[string]*cniHost{}
	var all []*container
	for _, n := range c.nodes {
		h := newCNIHost(t, c, n)
		hosts[n.name] = h
		// c's containers use the CNI 1.1.0 network: weft speaks 1.0.0 to
		// Debian's bridge and answers in 1.1.0.
		network := cniNet
		if n.name == "c" {
			network = cniNet11
		}
		for i := 1; i <= 2; i++ {
			all = append(all, addContainer(t, ctx, c, e, h, fmt.Sprintf("%sc%d", n.name, i), network))
		}
	}
	by := map[string]*container{}
	for _, ct := range all {
		by[ct.name] = ct
		if !exists(ct.ipamFile()) {
			t.Fatalf("host-local has no record of %s at %s: %v", ct.ip, ct.ipamFile(), dirNames(filepath.Dir(ct.ipamFile())))
		}
	}

	t.Run("every container reaches the other hosts' containers and its weft0", func(t *testing.T) {
		pingContainers(t, ctx, all, func(src *container) []netip.Addr {
			dsts := []netip.Addr{src.h.n.overlay}
			for _, dst := range all {
				if dst.h != src.h {
					dsts = append(dsts, dst.ip)
				}
			}
			return dsts
		})
	})

	t.Run("iperf3 TCP from a container on a to one on c", func(t *testing.T) {
		iperfCheck(t, ctx, by["ac1"].ns, by["cc1"].ns, by["cc1"].ip, "container ac1 -> cc1")
	})

	t.Run("traffic inside the cluster network keeps the container's address", func(t *testing.T) {
		dst := by["bc1"]
		out := capture(t, dst.ns, "eth0", "icmp[icmptype] == icmp-echo", 2, func() {
			if err := pingOKFrom(ctx, by["ac1"].ns, dst.ip, 2); err != nil {
				t.Error(err)
			}
		})
		if !strings.Contains(out, by["ac1"].ip.String()+" > "+dst.ip.String()) {
			t.Errorf("container bc1 should see ac1's own address %s as the source:\n%s", by["ac1"].ip, out)
		}
	})

	t.Run("ipMasq: a container reaches a host outside the overlay as its host", func(t *testing.T) {
		for _, src := range []*container{by["ac1"], by["cc2"]} {
			out := capture(t, x, "eth0", "icmp[icmptype] == icmp-echo", 2, func() {
				if err := pingOKFrom(ctx, src.ns, xAddr, 2); err != nil {
					t.Error(err)
				}
			})
			if want := src.h.n.underlay.String() + " > " + xAddr.String(); !strings.Contains(out, want) {
				t.Errorf("x should see %s's traffic from its host's underlay address (%s):\n%s", src.name, want, out)
			}
		}
	})

	t.Run("CHECK passes on healthy containers; STATUS while weft runs", func(t *testing.T) {
		for _, ct := range []*container{by["ac1"], by["cc1"]} {
			if _, err := ct.h.cnitool(ctx, e, "check", ct.network, ct.path); err != nil {
				t.Error(err)
			}
		}
		for _, h := range hosts {
			if _, err := h.cnitool(ctx, e, "status", cniNet11, by["ac1"].path); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("DEL removes the veth and frees the address; twice is fine", func(t *testing.T) {
		ct := by["ac2"]
		nat, _ := ct.h.n.host.Run(ctx, "iptables", "-t", "nat", "-S")
		if !strings.Contains(string(nat), ct.ip.String()) {
			t.Errorf("no masquerading rule for %s on a:\n%s", ct.ip, nat)
		}
		for i := 0; i < 2; i++ {
			if _, err := ct.h.cnitool(ctx, e, "del", ct.network, ct.path); err != nil {
				t.Fatalf("DEL %d: %v", i+1, err)
			}
		}
		if ok, err := ct.h.n.host.LinkExists(ctx, ct.hostVeth); err != nil || ok {
			t.Errorf("veth %s still on a after DEL (%v)", ct.hostVeth, err)
		}
		if ok, err := ct.ns.LinkExists(ctx, "eth0"); err != nil || ok {
			t.Errorf("eth0 still in %s after DEL (%v)", ct.name, err)
		}
		if exists(ct.ipamFile()) {
			t.Errorf("host-local still holds %s after DEL", ct.ip)
		}
		if names := dirNames(ct.h.dataDir); len(names) != 1 {
			t.Errorf("weft state on a after DEL: %v, want only ac1's", names)
		}
		nat, _ = ct.h.n.host.Run(ctx, "iptables", "-t", "nat", "-S")
		if strings.Contains(string(nat), ct.ip.String()) {
			t.Errorf("masquerading rule for %s left after DEL:\n%s", ct.ip, nat)
		}
	})

	b := hosts["b"]
	t.Run("with b's weft stopped: ADD is refused with code 11, DEL works", func(t *testing.T) {
		if err := b.n.proc.Stop(10 * time.Second); err != nil {
			t.Logf("weft on b stopped: %v", err)
		}
		ns, err := c.lab.Host("bc3")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("/run/netns", ns.NS())
		linksBefore, _ := b.n.host.Links(ctx)
		ipamBefore := dirNames(filepath.Join(b.ipamDir, cniNet))
		stateBefore := dirNames(b.dataDir)

		out, code, err := b.plugin(ctx, e, "ADD", cniNet, "bc3", path)
		if err != nil {
			t.Fatal(err)
		}
		var cniErr struct {
			Code uint   `json:"code"`
			Msg  string `json:"msg"`
		}
		if err := json.Unmarshal(out, &cniErr); err != nil || code != 1 || cniErr.Code != 11 || !strings.Contains(cniErr.Msg, "not running") {
			t.Errorf("ADD with weft stopped: exit %d, stdout %q (%v); want exit 1 and a CNI error with code 11", code, out, err)
		}
		if _, err := b.cnitool(ctx, e, "add", cniNet, path); err == nil || !strings.Contains(err.Error(), "not running") {
			t.Errorf("cnitool add with weft stopped: %v", err)
		}
		linksAfter, _ := b.n.host.Links(ctx)
		cLinks, _ := ns.Links(ctx)
		if !slices.Equal(linksBefore, linksAfter) || !slices.Equal(cLinks, []string{"lo"}) ||
			!slices.Equal(ipamBefore, dirNames(filepath.Join(b.ipamDir, cniNet))) || !slices.Equal(stateBefore, dirNames(b.dataDir)) {
			t.Errorf("refused ADD created something: links %v -> %v, container %v, host-local %v -> %v, state %v -> %v",
				linksBefore, linksAfter, cLinks, ipamBefore, dirNames(filepath.Join(b.ipamDir, cniNet)), stateBefore, dirNames(b.dataDir))
		}
		out, code, err = b.plugin(ctx, e, "STATUS", cniNet11, "", "")
		cniErr.Code = 0
		if jerr := json.Unmarshal(out, &cniErr); err != nil || jerr != nil || code != 1 || cniErr.Code != 50 {
			t.Errorf("STATUS with weft stopped: exit %d %s %v %v; want a CNI error with code 50", code, out, err, jerr)
		}
		if _, err := b.cnitool(ctx, e, "status", cniNet11, path); err == nil {
			t.Error("cnitool status with weft stopped succeeded")
		}

		ct := by["bc2"]
		if _, err := b.cnitool(ctx, e, "del", ct.network, ct.path); err != nil {
			t.Fatalf("DEL with weft stopped: %v", err)
		}
		if ok, _ := b.n.host.LinkExists(ctx, ct.hostVeth); ok || exists(ct.ipamFile()) {
			t.Errorf("DEL with weft stopped left veth %s (%v) or address %s (%v)", ct.hostVeth, ok, ct.ip, exists(ct.ipamFile()))
		}
	})

	t.Run("after b's weft restarts, a's containers reach b's again", func(t *testing.T) {
		c.start(b.n)
		c.waitFormed(formationTimeout)
		bc4 := addContainer(t, ctx, c, e, b, "bc4", cniNet)
		pingContainers(t, ctx, []*container{by["ac1"]}, func(*container) []netip.Addr {
			return []netip.Addr{by["bc1"].ip, bc4.ip}
		})
		pingContainers(t, ctx, []*container{by["bc1"], bc4}, func(*container) []netip.Addr {
			return []netip.Addr{by["ac1"].ip, by["cc1"].ip}
		})
	})
}

// pingOKFrom pings dst from h count times and requires every reply.
func pingOKFrom(ctx context.Context, h *netlab.Host, dst netip.Addr, count int) error {
	res, err := h.Ping(ctx, dst, count)
	if err != nil {
		return err
	}
	if res.Received != count {
		return fmt.Errorf("ping %s -> %s: %d/%d received\n%s", h.Name(), dst, res.Received, res.Sent, res.Output)
	}
	return nil
}

// TestCNIDualStack: on dual-stack weft hosts, a container gets an address
// of each family, and containers on two hosts reach each other and the
// other host's weft0 over both.
func TestCNIDualStack(t *testing.T) {
	netlab.RequireRoot(t)
	c := newCluster(t, "a", "b")
	for _, n := range c.nodes {
		dualStackNode(n, otherUnderlays(c.nodes, n))
	}
	e := findCNIEnv(t, c.lab.Dir())
	c.startAll()
	c.waitFormed(formationTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var cts []*container
	for _, n := range c.nodes {
		cts = append(cts, addContainer(t, ctx, c, e, newCNIHost(t, c, n), n.name+"c1", cniNet))
	}
	pingContainers(t, ctx, cts, func(src *container) []netip.Addr {
		var dsts []netip.Addr
		for _, o := range cts {
			if o != src {
				dsts = append(dsts, o.ip, o.ip6, o.h.n.overlay, o.h.n.overlay6)
			}
		}
		return dsts
	})
	for _, ct := range cts {
		if _, err := ct.h.cnitool(ctx, e, "del", cniNet, ct.path); err != nil {
			t.Errorf("cnitool del %s: %v", ct.name, err)
		}
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
