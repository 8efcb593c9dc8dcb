package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/node"
)

// call is one delegate invocation the fake exec saw.
type call struct {
	Plugin  string
	Command string
	Env     map[string]string
	Conf    map[string]any
}

// fakeExec plays the delegate plugins: it records each call and answers
// ADD with an address from the delegate config's first range.
type fakeExec struct {
	mu       sync.Mutex
	calls    []call
	versions []string // what the delegate says it supports
	failAdd  error
	failDel  error
}

func (f *fakeExec) ExecPlugin(_ context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	c := call{Plugin: filepath.Base(path), Command: env["CNI_COMMAND"], Env: env}
	if len(stdin) > 0 {
		if err := json.Unmarshal(stdin, &c.Conf); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	switch c.Command {
	case "VERSION":
		return json.Marshal(map[string]any{"cniVersion": "1.0.0", "supportedVersions": f.versions})
	case "DEL":
		return nil, f.failDel
	case "ADD":
		if f.failAdd != nil {
			return nil, f.failAdd
		}
		rng := c.Conf["ipam"].(map[string]any)["ranges"].([]any)[0].([]any)[0].(map[string]any)
		subnet := netip.MustParsePrefix(rng["subnet"].(string))
		ip := netip.MustParseAddr(rng["gateway"].(string)).Next()
		return json.Marshal(map[string]any{
			"cniVersion": c.Conf["cniVersion"],
			"interfaces": []any{map[string]any{"name": "cni0"}, map[string]any{"name": env["CNI_IFNAME"], "sandbox": env["CNI_NETNS"]}},
			"ips": []any{map[string]any{"address": netip.PrefixFrom(ip, subnet.Bits()).String(),
				"gateway": rng["gateway"], "interface": 1}},
		})
	}
	return nil, nil
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/fake/cni/bin/" + plugin, nil
}

func (f *fakeExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// delegateCalls returns the calls other than VERSION.
func (f *fakeExec) delegateCalls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.Command != "VERSION" {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeExec) reset() {
	f.mu.Lock()
	f.calls = nil
	f.mu.Unlock()
}

type masqCall struct {
	Op, Network, IfName, ContainerID string
	IPNs                             []string
}

type fakeMasq struct {
	mu       sync.Mutex
	calls    []masqCall
	failNext error
}

func (m *fakeMasq) record(op string, ps []netip.Prefix, network, ifName, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	m.calls = append(m.calls, masqCall{op, network, ifName, id, s})
	err := m.failNext
	m.failNext = nil
	return err
}

func (m *fakeMasq) Setup(ps []netip.Prefix, network, ifName, id string) error {
	return m.record("setup", ps, network, ifName, id)
}

func (m *fakeMasq) Teardown(ps []netip.Prefix, network, ifName, id string) error {
	return m.record("teardown", ps, network, ifName, id)
}

func (m *fakeMasq) GC(network string, _ []types.GCAttachment) error {
	return m.record("gc", nil, network, "", "")
}

// env is one plugin under test with its files and fakes.
type env struct {
	t          *testing.T
	p          *Plugin
	exec       *fakeExec
	masq       *fakeMasq
	out        *bytes.Buffer
	dir        string
	subnetFile string
	dataDir    string
	daemon     node.Status
	daemonErr  error
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{t: t, exec: &fakeExec{versions: []string{"0.3.1", "0.4.0", "1.0.0"}}, masq: &fakeMasq{},
		out: &bytes.Buffer{}, dir: dir,
		subnetFile: filepath.Join(dir, "subnet.env"), dataDir: filepath.Join(dir, "data")}
	e.daemon.Node.Ready = true
	e.daemon.Node.Subnet = "10.244.1.0/24"
	e.p = &Plugin{
		Exec: e.exec, Masq: e.masq, Stdout: e.out, Timeout: 10 * time.Second,
		Status: func(_ context.Context, socket string) (node.Status, error) {
			if socket != filepath.Join(dir, "weft.sock") {
				return node.Status{}, fmt.Errorf("socket %s: unexpected", socket)
			}
			return e.daemon, e.daemonErr
		},
	}
	return e
}

func (e *env) writeSubnet(subnet string) {
	e.t.Helper()
	p := netip.MustParsePrefix(subnet)
	s := fmt.Sprintf("WEFT_NETWORK=10.244.0.0/16\nWEFT_SUBNET=%s\nWEFT_ADDRESS=%s\nWEFT_MTU=1472\nWEFT_ENCAP=udp\n", p, p.Addr())
	if err := os.WriteFile(e.subnetFile, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.daemon.Node.Subnet = subnet
}

func (e *env) conf(version string, extra string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"weftnet","type":"weft","subnetFile":%q,"socket":%q,"dataDir":%q%s}`,
		version, e.subnetFile, filepath.Join(e.dir, "weft.sock"), e.dataDir, extra))
}

func (e *env) args(id string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/" + id, IfName: "eth0", Path: "/fake/cni/bin", StdinData: conf}
}

// cniCode returns err's CNI error code, failing if it is not a CNI error.
func cniCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	return e.Code, e.Msg
}

func (e *env) stateFiles() []string {
	ents, _ := os.ReadDir(e.dataDir)
	var names []string
	for _, x := range ents {
		names = append(names, x.Name())
	}
	return names
}

func TestAddRefusedWhileDaemonDown(t *testing.T) {
	e := newEnv(t)
	err := e.p.Add(e.args("c1", e.conf("1.0.0", "")))
	code, msg := cniCode(t, err)
	if code != types.ErrTryAgainLater || !strings.Contains(msg, e.subnetFile) || !strings.Contains(msg, "not running or not ready") {
		t.Errorf("no subnet file: code %d %q; want 11 naming %s", code, msg, e.subnetFile)
	}

	e.writeSubnet("10.244.1.0/24")
	e.daemonErr = errors.New("is weft running? cannot reach it")
	code, msg = cniCode(t, e.p.Add(e.args("c1", e.conf("1.0.0", ""))))
	if code != types.ErrTryAgainLater || !strings.Contains(msg, "not running") || !strings.Contains(msg, "socket") {
		t.Errorf("daemon unreachable: code %d %q", code, msg)
	}

	e.daemonErr = nil
	e.daemon.Node.Ready = false
	code, msg = cniCode(t, e.p.Add(e.args("c1", e.conf("1.0.0", ""))))
	if code != types.ErrTryAgainLater || !strings.Contains(msg, "not ready") {
		t.Errorf("daemon not ready: code %d %q", code, msg)
	}

	e.daemon.Node.Ready = true
	e.daemon.Node.Subnet = "10.244.9.0/24"
	code, msg = cniCode(t, e.p.Add(e.args("c1", e.conf("1.0.0", ""))))
	if code != types.ErrTryAgainLater || !strings.Contains(msg, "moving") {
		t.Errorf("file and daemon disagree: code %d %q", code, msg)
	}

	if calls := e.exec.delegateCalls(); len(calls) != 0 {
		t.Errorf("delegate called although ADD was refused: %+v", calls)
	}
	if files := e.stateFiles(); len(files) != 0 || e.out.Len() != 0 || len(e.masq.calls) != 0 {
		t.Errorf("refused ADD left state %v, output %q, masq %v", files, e.out, e.masq.calls)
	}
}

func TestAddDelegatesAndKeepsState(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	if err := e.p.Add(e.args("c1", e.conf("1.1.0", ""))); err != nil {
		t.Fatal(err)
	}
	calls := e.exec.delegateCalls()
	if len(calls) != 1 || calls[0].Plugin != "bridge" || calls[0].Command != "ADD" {
		t.Fatalf("delegate calls %+v, want one bridge ADD", calls)
	}
	// The delegate speaks only 1.0.0: weft asks in 1.0.0 and answers the
	// runtime in 1.1.0.
	if v := calls[0].Conf["cniVersion"]; v != "1.0.0" {
		t.Errorf("delegate asked in CNI %v, want 1.0.0 (all it supports)", v)
	}
	if calls[0].Env["CNI_CONTAINERID"] != "" {
		// DelegateAdd inherits the runtime's environment; the fake args
		// are not in it, so nothing else may have been invented.
		t.Errorf("unexpected CNI_CONTAINERID %q", calls[0].Env["CNI_CONTAINERID"])
	}
	var res map[string]any
	if err := json.Unmarshal(e.out.Bytes(), &res); err != nil {
		t.Fatalf("result %q: %v", e.out, err)
	}
	if res["cniVersion"] != "1.1.0" {
		t.Errorf("result version %v, want the config's 1.1.0: %s", res["cniVersion"], e.out)
	}
	if ips := res["ips"].([]any); len(ips) != 1 || ips[0].(map[string]any)["address"] != "10.244.1.2/24" {
		t.Errorf("result ips %v", res["ips"])
	}
	// Masquerading: from the container's address to outside the cluster
	// network (the address with the network's prefix length).
	want := []masqCall{{"setup", "weftnet", "eth0", "c1", []string{"10.244.1.2/16"}}}
	if !reflect.DeepEqual(e.masq.calls, want) {
		t.Errorf("masq %+v, want %+v", e.masq.calls, want)
	}
	st, ok, err := Store{Dir: e.dataDir}.Load("c1", "eth0")
	if err != nil || !ok {
		t.Fatalf("state: %v %v", ok, err)
	}
	if st.Subnet != "10.244.1.0/24" || st.Network != "10.244.0.0/16" || !slices.Equal(st.Masq, []string{"10.244.1.2/16"}) {
		t.Errorf("state %+v", st)
	}
	var kept map[string]any
	if err := json.Unmarshal(st.Delegate, &kept); err != nil || !reflect.DeepEqual(kept, calls[0].Conf) {
		t.Errorf("kept delegate config %v differs from the one ADD used %v (%v)", kept, calls[0].Conf, err)
	}

	// With ipMasq off, weft sets up no masquerading.
	e.masq.calls = nil
	if err := e.p.Add(e.args("c2", e.conf("1.0.0", `,"ipMasq":false`))); err != nil {
		t.Fatal(err)
	}
	if len(e.masq.calls) != 0 {
		t.Errorf("ipMasq false: masq %v", e.masq.calls)
	}
}

func TestAddFailures(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	// The delegate's own CNI error comes back unchanged, and the state is
	// kept so that the runtime's DEL cleans up.
	e.exec.failAdd = types.NewError(types.ErrInternal, "bridge says no", "")
	err := e.p.Add(e.args("c1", e.conf("1.0.0", "")))
	if code, msg := cniCode(t, err); code != types.ErrInternal || !strings.Contains(msg, "bridge says no") {
		t.Errorf("delegate failure: %d %q", code, msg)
	}
	if _, ok, _ := (Store{Dir: e.dataDir}).Load("c1", "eth0"); !ok {
		t.Error("no state kept after a failed delegate ADD: DEL could not clean up")
	}
	// Masquerading fails: the delegate's ADD is undone.
	e.exec.failAdd = nil
	e.exec.reset()
	e.masq.failNext = errors.New("no iptables")
	if err := e.p.Add(e.args("c2", e.conf("1.0.0", ""))); err == nil || !strings.Contains(err.Error(), "no iptables") {
		t.Errorf("masq failure: %v", err)
	}
	calls := e.exec.delegateCalls()
	if len(calls) != 2 || calls[1].Command != "DEL" {
		t.Errorf("masq failure: delegate calls %+v, want ADD then DEL", calls)
	}
	if _, ok, _ := (Store{Dir: e.dataDir}).Load("c2", "eth0"); ok {
		t.Error("state kept after an ADD that was fully undone")
	}
}

func TestDelUsesKeptState(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	if err := e.p.Add(e.args("c1", e.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	added := e.exec.delegateCalls()[0].Conf
	e.exec.reset()
	e.masq.calls = nil
	// The daemon is gone and so is its subnet file.
	if err := os.Remove(e.subnetFile); err != nil {
		t.Fatal(err)
	}
	e.daemonErr = errors.New("down")
	if err := e.p.Del(e.args("c1", e.conf("1.0.0", ""))); err != nil {
		t.Fatalf("DEL with the daemon down: %v", err)
	}
	calls := e.exec.delegateCalls()
	if len(calls) != 1 || calls[0].Command != "DEL" || !reflect.DeepEqual(calls[0].Conf, added) {
		t.Fatalf("DEL delegate calls %+v, want one DEL with the ADD's config %v", calls, added)
	}
	want := []masqCall{{"teardown", "weftnet", "eth0", "c1", []string{"10.244.1.2/16"}}}
	if !reflect.DeepEqual(e.masq.calls, want) {
		t.Errorf("masq %+v, want %+v", e.masq.calls, want)
	}
	if files := e.stateFiles(); len(files) != 0 {
		t.Errorf("state left after DEL: %v", files)
	}
	// A second DEL has nothing to do and succeeds.
	e.exec.reset()
	if err := e.p.Del(e.args("c1", e.conf("1.0.0", ""))); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if calls := e.exec.delegateCalls(); len(calls) != 0 {
		t.Errorf("second DEL called the delegate: %+v", calls)
	}
	// A bad config is still an error on DEL.
	if code, _ := cniCode(t, e.p.Del(e.args("c1", e.conf("1.0.0", `,"ipMasq":1`)))); code != types.ErrInvalidNetworkConfig {
		t.Errorf("DEL with a bad config: code %d", code)
	}
}

// The subnet moves (an automatic subnet lost a conflict): containers added
// before keep their addresses and their kept config; CHECK tells the
// runtime to recreate them; new containers get the new subnet, and the
// bridge is told to take the new gateway address.
// A DEL whose delegate fails keeps the state for the runtime's retry, which
// does not tear the masquerading down a second time.
func TestDelRetry(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	if err := e.p.Add(e.args("c1", e.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	e.masq.calls = nil
	e.exec.failDel = types.NewError(types.ErrInternal, "bridge busy", "")
	if err := e.p.Del(e.args("c1", e.conf("1.0.0", ""))); err == nil {
		t.Fatal("DEL succeeded although the delegate failed")
	}
	if files := e.stateFiles(); len(files) != 1 {
		t.Fatalf("state after a failed DEL: %v", files)
	}
	e.exec.failDel = nil
	e.exec.reset()
	if err := e.p.Del(e.args("c1", e.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	if len(e.masq.calls) != 1 {
		t.Errorf("masq calls over both DELs %+v, want one teardown", e.masq.calls)
	}
	if calls := e.exec.delegateCalls(); len(calls) != 1 || calls[0].Command != "DEL" {
		t.Errorf("retried DEL: delegate calls %+v", calls)
	}
	if files := e.stateFiles(); len(files) != 0 {
		t.Errorf("state after the retried DEL: %v", files)
	}
}

func TestSubnetMoved(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	if err := e.p.Add(e.args("old", e.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	oldConf := e.exec.delegateCalls()[0].Conf
	e.writeSubnet("10.244.7.0/24")
	e.exec.reset()
	e.out.Reset()
	if err := e.p.Add(e.args("new", e.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	newConf := e.exec.delegateCalls()[0].Conf
	rng := newConf["ipam"].(map[string]any)["ranges"].([]any)[0].([]any)[0].(map[string]any)
	if rng["subnet"] != "10.244.7.0/24" || rng["gateway"] != "10.244.7.1" || newConf["forceAddress"] != true {
		t.Errorf("ADD after the move: delegate %v", newConf)
	}
	if !strings.Contains(e.out.String(), "10.244.7.2/24") {
		t.Errorf("ADD after the move: result %s", e.out)
	}

	code, msg := cniCode(t, e.p.Check(e.args("old", e.conf("1.0.0", ""))))
	if code != ErrSubnetMoved || !strings.Contains(msg, "moved from 10.244.1.0/24 to 10.244.7.0/24") || !strings.Contains(msg, "recreate") {
		t.Errorf("CHECK of a container from the old subnet: code %d %q", code, msg)
	}
	e.exec.reset()
	prev := fmt.Sprintf(`,"prevResult":%s`, e.out.String())
	if err := e.p.Check(e.args("new", e.conf("1.0.0", prev))); err != nil {
		t.Errorf("CHECK of a container from the new subnet: %v", err)
	}
	if calls := e.exec.delegateCalls(); len(calls) != 1 || calls[0].Command != "CHECK" || calls[0].Conf["prevResult"] == nil {
		t.Errorf("CHECK delegate calls %+v, want one CHECK with prevResult", calls)
	}

	// DEL of the old container releases its old address: the old config.
	e.exec.reset()
	if err := e.p.Del(e.args("old", e.conf("1.0.0", ""))); err != nil {
		t.Fatal(err)
	}
	if calls := e.exec.delegateCalls(); len(calls) != 1 || !reflect.DeepEqual(calls[0].Conf, oldConf) {
		t.Errorf("DEL of the old container: %+v, want its config from before the move", calls)
	}
}

func TestCheckWithoutState(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	code, msg := cniCode(t, e.p.Check(e.args("nope", e.conf("1.0.0", ""))))
	if code != types.ErrInternal || !strings.Contains(msg, "no state kept") || !strings.Contains(msg, "dataDir") {
		t.Errorf("CHECK of an unknown container: %d %q", code, msg)
	}
}

func TestCheckConvertsPrevResult(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	if err := e.p.Add(e.args("c1", e.conf("1.1.0", ""))); err != nil {
		t.Fatal(err)
	}
	e.exec.reset()
	if err := e.p.Check(e.args("c1", e.conf("1.1.0", `,"prevResult":`+e.out.String()))); err != nil {
		t.Fatal(err)
	}
	c := e.exec.delegateCalls()[0]
	prev, _ := c.Conf["prevResult"].(map[string]any)
	if c.Conf["cniVersion"] != "1.0.0" || prev["cniVersion"] != "1.0.0" {
		t.Errorf("CHECK: delegate config %v: want config and prevResult in the delegate's 1.0.0", c.Conf)
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	code, msg := cniCode(t, e.p.StatusCmd(e.args("", e.conf("1.1.0", ""))))
	if code != types.ErrPluginNotAvailable || !strings.Contains(msg, e.subnetFile) {
		t.Errorf("STATUS without a subnet file: %d %q", code, msg)
	}
	e.writeSubnet("10.244.1.0/24")
	if err := e.p.StatusCmd(e.args("", e.conf("1.1.0", ""))); err != nil {
		t.Errorf("STATUS with the daemon ready: %v", err)
	}
	e.daemonErr = errors.New("connection refused")
	if code, msg := cniCode(t, e.p.StatusCmd(e.args("", e.conf("1.1.0", "")))); code != types.ErrPluginNotAvailable || !strings.Contains(msg, "not running") {
		t.Errorf("STATUS with the daemon down: %d %q", code, msg)
	}
	e.daemonErr = nil
	e.daemon.Node.Ready = false
	if code, _ := cniCode(t, e.p.StatusCmd(e.args("", e.conf("1.1.0", "")))); code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with the daemon not ready: %d", code)
	}
}

func TestGC(t *testing.T) {
	e := newEnv(t)
	e.writeSubnet("10.244.1.0/24")
	for _, id := range []string{"keep", "stale"} {
		if err := e.p.Add(e.args(id, e.conf("1.1.0", ""))); err != nil {
			t.Fatal(err)
		}
	}
	// An attachment of another network in the same dataDir is not GC's.
	other := []byte(strings.Replace(string(e.conf("1.1.0", "")), `"name":"weftnet"`, `"name":"other"`, 1))
	if err := e.p.Add(e.args("othernet", other)); err != nil {
		t.Fatal(err)
	}
	e.exec.reset()
	e.masq.calls = nil
	gc := e.conf("1.1.0", `,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]`)
	if err := e.p.GC(&skel.CmdArgs{Path: "/fake/cni/bin", StdinData: gc}); err != nil {
		t.Fatal(err)
	}
	calls := e.exec.delegateCalls()
	if len(calls) != 1 || calls[0].Command != "DEL" || calls[0].Env["CNI_CONTAINERID"] != "stale" || calls[0].Env["CNI_IFNAME"] != "eth0" {
		t.Fatalf("GC delegate calls %+v, want one DEL of stale/eth0 (the delegate speaks no 1.1.0: no GC)", calls)
	}
	if files := e.stateFiles(); !slices.Equal(files, []string{"keep_eth0.json", "othernet_eth0.json"}) {
		t.Errorf("state after GC: %v", files)
	}
	if len(e.masq.calls) != 2 || e.masq.calls[0].Op != "teardown" || e.masq.calls[0].ContainerID != "stale" || e.masq.calls[1].Op != "gc" {
		t.Errorf("masq calls %+v", e.masq.calls)
	}
	// A delegate that speaks 1.1.0 is asked to GC too, with the valid list.
	e.exec.versions = append(e.exec.versions, "1.1.0")
	e.exec.reset()
	if err := e.p.GC(&skel.CmdArgs{Path: "/fake/cni/bin", StdinData: gc}); err != nil {
		t.Fatal(err)
	}
	calls = e.exec.delegateCalls()
	if len(calls) != 1 || calls[0].Command != "GC" || calls[0].Conf["cni.dev/valid-attachments"] == nil {
		t.Errorf("GC with a 1.1.0 delegate: calls %+v", calls)
	}
}
