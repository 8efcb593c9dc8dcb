package config

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/weftnet/weft/bgp"
	"github.com/weftnet/weft/node"
)

func passwordFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bgp.password")
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseBGP(t *testing.T) {
	pw := passwordFile(t, "s3cret\n", 0o600)
	s, _, _, err := Parse(append(base, "--bgp-asn", "64512", "--bgp-router-id", "192.0.2.1", "--bgp-announce-network",
		"--bgp-peer", "addr=192.0.2.254,asn=65000", "--bgp-peer", "addr=2001:db8::fe,asn=1.10,port=1179,password-file="+pw), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := node.BGPSettings{Enabled: true, ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.1"), AnnounceNetwork: true}
	if s.BGP != want {
		t.Errorf("BGP %+v, want %+v", s.BGP, want)
	}
	wantPeers := []bgp.Neighbor{
		{Addr: netip.MustParseAddr("192.0.2.254"), ASN: 65000},
		{Addr: netip.MustParseAddr("2001:db8::fe"), ASN: 1<<16 | 10, Port: 1179, Password: "s3cret"},
	}
	if !reflect.DeepEqual(s.Live.BGPPeers, wantPeers) {
		t.Errorf("peers %+v, want %+v", s.Live.BGPPeers, wantPeers)
	}
	// Without --bgp-asn: no BGP.
	s, _, _, err = Parse(base, io.Discard)
	if err != nil || s.BGP.Enabled || len(s.Live.BGPPeers) > 0 {
		t.Errorf("no BGP asked: %+v %v", s.BGP, err)
	}
}

func TestParseBGPYAML(t *testing.T) {
	pw := passwordFile(t, "s3cret", 0o600)
	cfg := filepath.Join(t.TempDir(), "weft.yaml")
	yaml := "name: a\nnetwork: 10.244.0.0/16\ninsecureGossip: true\nbgpAsn: 64512\nbgpPeers:\n  - {addr: 192.0.2.254, asn: 65000, port: 179, passwordFile: " + pw + "}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _, _, err := Parse([]string{"--config", cfg}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.BGP.ASN != 64512 || len(s.Live.BGPPeers) != 1 || s.Live.BGPPeers[0].Password != "s3cret" || s.Live.BGPPeers[0].Port != 179 {
		t.Errorf("%+v %+v", s.BGP, s.Live.BGPPeers)
	}
	// A bad value in the file names the key, its index and the file.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: a\nnetwork: 10.244.0.0/16\ninsecureGossip: true\nbgpAsn: 64512\nbgpPeers:\n  - {addr: 192.0.2.254, asn: 70000000000}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = Parse([]string{"--config", bad}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "bgpPeers[0]") || !strings.Contains(err.Error(), "70000000000") || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v", err)
	}
}

func TestParseBGPErrors(t *testing.T) {
	open := passwordFile(t, "s3cret", 0o644)
	empty := passwordFile(t, "\n", 0o600)
	peer := []string{"--bgp-peer", "addr=192.0.2.254,asn=65000"}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{append([]string{"--bgp-asn", "0"}, peer...), []string{"--bgp-asn", `"0"`, "reserved"}},
		{append([]string{"--bgp-asn", "65535"}, peer...), []string{"--bgp-asn", "65535"}},
		{append([]string{"--bgp-asn", "4294967296"}, peer...), []string{"--bgp-asn", "4294967296"}},
		{append([]string{"--bgp-asn", "-1"}, peer...), []string{"--bgp-asn", "-1"}},
		{append([]string{"--bgp-asn", "sixty"}, peer...), []string{"--bgp-asn", "sixty"}},
		{append([]string{"--bgp-asn", "64512", "--bgp-router-id", "2001:db8::1"}, peer...), []string{"--bgp-router-id", "2001:db8::1", "IPv4"}},
		{append([]string{"--bgp-asn", "64512", "--bgp-router-id", "router1"}, peer...), []string{"--bgp-router-id", "router1"}},
		{append([]string{"--bgp-asn", "64512", "--bgp-router-id", "0.0.0.0"}, peer...), []string{"--bgp-router-id", "0.0.0.0"}},
		{[]string{"--bgp-asn", "64512"}, []string{"--bgp-asn", "--bgp-peer"}},
		{peer, []string{"--bgp-peer", "--bgp-asn"}},
		{[]string{"--bgp-router-id", "192.0.2.1"}, []string{"--bgp-router-id", "--bgp-asn"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=router,asn=65000"}, []string{"--bgp-peer", "addr=router", `addr "router"`}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254"}, []string{"--bgp-peer", "asn is missing"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=0"}, []string{"--bgp-peer", `asn "0"`, "reserved"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=65000,port=70000"}, []string{"--bgp-peer", "port 70000"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=65000,port=x"}, []string{"bgp-peer", `port "x"`}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,as=65000"}, []string{"bgp-peer", `unknown key "as"`}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=65000", "--bgp-peer", "addr=192.0.2.254,asn=65001"}, []string{"--bgp-peer", "twice"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=65000,password-file=" + open}, []string{"--bgp-peer", open, "0644"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=65000,password-file=" + empty}, []string{"--bgp-peer", empty, "empty"}},
		{[]string{"--bgp-asn", "64512", "--bgp-peer", "addr=192.0.2.254,asn=65000,password-file=/nonexistent/pw"}, []string{"--bgp-peer", "/nonexistent/pw"}},
	} {
		_, _, _, err := Parse(append(append([]string{}, base...), tc.args...), io.Discard)
		var ue *UsageError
		if err == nil || !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %q does not name %q", tc.args, err, w)
			}
		}
	}
}
