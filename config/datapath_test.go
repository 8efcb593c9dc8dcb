package config

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/node"
)

// --datapath and --vxlan-device: the default is the userspace path (an
// upgrade changes no data path unasked), auto and kernel are taken as
// given, and the device's name defaults to kernelvx's.
func TestParseDatapath(t *testing.T) {
	vx := args(base, "--encap", "vxlan")
	for _, tc := range []struct {
		name       string
		args       []string
		file       string // config file text, if any
		wantMode   node.DatapathMode
		wantDevice string
	}{
		{"default", base, "", node.DatapathUserspace, kernelvx.DefaultName},
		{"default with vxlan", vx, "", node.DatapathUserspace, kernelvx.DefaultName},
		{"userspace", args(vx, "--datapath", "userspace"), "", node.DatapathUserspace, kernelvx.DefaultName},
		{"kernel", args(vx, "--datapath", "kernel"), "", node.DatapathKernel, kernelvx.DefaultName},
		{"kernel named device", args(vx, "--datapath", "kernel", "--vxlan-device", "vx1"), "", node.DatapathKernel, "vx1"},
		// auto takes anything: the node chooses at start.
		{"auto", args(vx, "--datapath", "auto"), "", node.DatapathAuto, kernelvx.DefaultName},
		{"auto with udp", args(base, "--datapath", "auto"), "", node.DatapathAuto, kernelvx.DefaultName},
		{"auto with direct routing", args(vx, "--datapath", "auto", "--direct-routing"), "", node.DatapathAuto, kernelvx.DefaultName},
		{"auto with a peer's port", args(vx, "--datapath", "auto", "--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,mac=02:00:00:00:00:09,port=4789"), "", node.DatapathAuto, kernelvx.DefaultName},
		{"kernel with a peer on our port", args(vx, "--datapath", "kernel", "--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,mac=02:00:00:00:00:09,port=8472"), "", node.DatapathKernel, kernelvx.DefaultName},
		{"file", nil, "encap: vxlan\ndatapath: kernel\nvxlanDevice: vx7\n", node.DatapathKernel, "vx7"},
		{"flag over file", []string{"--datapath", "auto"}, "encap: vxlan\ndatapath: kernel\n", node.DatapathAuto, kernelvx.DefaultName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv := tc.args
			if tc.file != "" {
				p := writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\nsubnet: 10.244.1.0/24\ninsecureGossip: true\n"+tc.file)
				argv = append([]string{"--config", p}, argv...)
			}
			s, _, _, err := Parse(argv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if s.Datapath != tc.wantMode || s.VXLANDevice != tc.wantDevice {
				t.Errorf("datapath %q device %q, want %q %q", s.Datapath, s.VXLANDevice, tc.wantMode, tc.wantDevice)
			}
		})
	}
}

// --datapath kernel with what only the userspace path does is a usage
// error naming both settings, where each came from.
func TestParseDatapathErrors(t *testing.T) {
	vx := args(base, "--encap", "vxlan")
	key := gossipKeyFile(t, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		file string
		want string
	}{
		{"bad mode", args(vx, "--datapath", "ebpf"), "", `invalid --datapath "ebpf": want userspace, kernel or auto`},
		{"bad device", args(vx, "--vxlan-device", "a/b"), "", `invalid --vxlan-device "a/b": want an interface name`},
		{"long device", args(vx, "--vxlan-device", "a-very-long-device"), "", `invalid --vxlan-device "a-very-long-device"`},
		{"device is the TUN", args(vx, "--vxlan-device", "weft0"), "", `invalid --vxlan-device "weft0": the TUN device's name (--tun)`},
		{"udp", args(base, "--datapath", "kernel"), "", "--datapath kernel with --encap udp: the kernel data path is the kernel's VXLAN device: it carries --encap vxlan only"},
		{"host-gw", args(base, "--datapath", "kernel", "--encap", "none"), "", "--datapath kernel with --encap none"},
		{"encrypt", args(bare, "--encap", "vxlan", "--gossip-key-file", key, "--encrypt", "--datapath", "kernel"), "", "--datapath kernel with --encrypt: the kernel's VXLAN device does not encrypt"},
		{"direct routing", args(vx, "--datapath", "kernel", "--direct-routing"), "", "--datapath kernel with --direct-routing: a direct route and the VXLAN device's route"},
		{"per-peer metrics", args(vx, "--datapath", "kernel", "--per-peer-metrics"), "", "--datapath kernel with --per-peer-metrics: the kernel counts traffic per device"},
		{"peer port", args(vx, "--datapath", "kernel", "--peer", "name=k,subnet=10.244.9.0/24,ip=192.0.2.9,mac=02:00:00:00:00:09,port=4789"), "",
			"--datapath kernel with --peer k (port 4789): the kernel's VXLAN device sends to one port, this host's (8472)"},
		{"file", nil, "datapath: kernel\nencap: udp\n", "datapath (in %s) kernel with encap (in %s) udp: "},
		{"file and flag", []string{"--datapath", "kernel"}, "encap: vxlan\nperPeerMetrics: true\n", "--datapath kernel with perPeerMetrics (in %s): "},
		{"file peer", nil, "datapath: kernel\nencap: vxlan\npeers: [{name: k, subnet: 10.244.9.0/24, ip: 192.0.2.9, mac: \"02:00:00:00:00:09\", port: 9}]\n",
			"datapath (in %s) kernel with peers[0] (in %s) k (port 9): "},
		{"file bad mode", nil, "datapath: fast\n", `invalid datapath (in %s) "fast": want userspace, kernel or auto`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv, want := tc.args, tc.want
			if tc.file != "" {
				p := writeConfig(t, "name: a\nnetwork: 10.244.0.0/16\nsubnet: 10.244.1.0/24\ninsecureGossip: true\n"+tc.file)
				argv = append([]string{"--config", p}, argv...)
				want = strings.ReplaceAll(want, "%s", p)
			}
			_, _, _, err := Parse(argv, io.Discard)
			var ue *UsageError
			if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
				t.Errorf("got %v\nwant a usage error containing %q", err, want)
			}
		})
	}
}

// args is base followed by more, in a slice of its own (append would
// share base's array between cases).
func args(base []string, more ...string) []string {
	return slices.Concat(base, more)
}

// --cleanup knows the VXLAN device's name too, from the flag or the file.
func TestCleanupNamesTheVXLANDevice(t *testing.T) {
	s, _, cleanup, err := Parse([]string{"--cleanup"}, io.Discard)
	if err != nil || !cleanup || s.VXLANDevice != kernelvx.DefaultName || s.TUN != "weft0" {
		t.Errorf("--cleanup: %q %q %v %v", s.TUN, s.VXLANDevice, cleanup, err)
	}
	p := writeConfig(t, "vxlanDevice: vx3\nsubnt: typo\n")
	s, _, _, err = Parse([]string{"--cleanup", "--config", p}, io.Discard)
	if err != nil || s.VXLANDevice != "vx3" {
		t.Errorf("--cleanup with vxlanDevice in a broken file: %q %v", s.VXLANDevice, err)
	}
	if _, _, _, err := Parse([]string{"--cleanup", "--vxlan-device", "x/y"}, io.Discard); err == nil || !strings.Contains(err.Error(), `invalid --vxlan-device "x/y"`) {
		t.Errorf("--cleanup --vxlan-device x/y: %v", err)
	}
}
