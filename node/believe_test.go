package node

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/encap"
	"github.com/weftnet/weft/membership"
	"github.com/weftnet/weft/router"
)

// Every claim of a member is checked against what this host knows before
// the member reaches the router (issue 21, rows 2 and 3).
func TestBelieveChecksClaims(t *testing.T) {
	p := netip.MustParsePrefix
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	self := membership.Meta{
		Subnets: []netip.Prefix{p("10.244.1.0/24")}, Underlay: netip.MustParseAddr("192.0.2.1"), Port: 8285, Encap: encap.UDP,
		Claimed: now.Add(-time.Hour).UnixMilli(), Networks: []netip.Prefix{p("10.244.0.0/16")},
	}
	good := self
	good.Subnets, good.Underlay, good.Claimed = []netip.Prefix{p("10.244.2.0/24")}, netip.MustParseAddr("192.0.2.2"), now.Add(-time.Minute).UnixMilli()
	with := func(f func(*membership.Meta)) membership.Meta {
		m := good
		f(&m)
		return m
	}
	for _, tt := range []struct {
		name string
		meta membership.Meta
		err  error
		want router.Refusal
		text string
	}{
		{"believed", good, nil, router.RefusedNone, ""},
		{"undecodable", membership.Meta{}, errors.New("truncated"), router.RefusedInvalidMeta, "invalid metadata"},
		{"another encap", with(func(m *membership.Meta) { m.Encap = encap.VXLAN }), nil, router.RefusedEncap, "encap"},
		{"another cluster", with(func(m *membership.Meta) {
			m.Networks, m.Subnets = []netip.Prefix{p("10.9.0.0/16")}, []netip.Prefix{p("10.9.1.0/24")}
		}), nil, router.RefusedNetwork, "10.9.0.0/16"},
		{"a wider network", with(func(m *membership.Meta) { m.Networks = []netip.Prefix{p("10.0.0.0/8")} }), nil, router.RefusedNetwork, "another cluster"},
		{"no network (an older weft)", with(func(m *membership.Meta) { m.Networks = nil }), nil, router.RefusedNetwork, "older"},
		{"subnet outside", with(func(m *membership.Meta) { m.Subnets = []netip.Prefix{p("0.0.0.0/1")} }), nil, router.RefusedSubnet, "outside our network"},
		{"metadata address", with(func(m *membership.Meta) { m.Subnets = []netip.Prefix{p("169.254.169.254/32")} }), nil, router.RefusedSubnet, "outside"},
		{"an IPv6 subnet in an IPv4 cluster", with(func(m *membership.Meta) { m.Subnets = append(m.Subnets[:1:1], p("fd00::/64")) }), nil, router.RefusedSubnet, "fd00::/64"},
		{"claim from the future", with(func(m *membership.Meta) { m.Claimed = now.Add(MaxClaimSkew + time.Minute).UnixMilli() }), nil, router.RefusedClaimTime, "ahead of our clock"},
		{"claim within the skew", with(func(m *membership.Meta) { m.Claimed = now.Add(MaxClaimSkew - time.Minute).UnixMilli() }), nil, router.RefusedNone, ""},
		{"claim before weft", with(func(m *membership.Meta) { m.Claimed = 1 }), nil, router.RefusedClaimTime, "before weft existed"},
		{"our own underlay address", with(func(m *membership.Meta) { m.Underlay = self.Underlay }), nil, router.RefusedUnderlay, "our own underlay"},
	} {
		why, text := believe(membership.Member{Name: "x", Meta: tt.meta, MetaErr: tt.err}, self, now)
		if why != tt.want || !strings.Contains(text, tt.text) || (why == router.RefusedNone) != (text == "") {
			t.Errorf("%s: %v %q, want %v and a reason containing %q", tt.name, why, text, tt.want, tt.text)
		}
	}
}
