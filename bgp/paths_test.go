package bgp

import (
	"net/netip"
	"reflect"
	"testing"
)

var (
	sub4  = netip.MustParsePrefix("10.244.3.0/24")
	sub6  = netip.MustParsePrefix("fd00:10:244:3::/64")
	net4  = netip.MustParsePrefix("10.244.0.0/16")
	net6  = netip.MustParsePrefix("fd00:10:244::/48")
	nh4   = netip.MustParseAddr("192.0.2.11")
	nh6   = netip.MustParseAddr("2001:db8::11")
	ready = State{Ready: true, Subnets: []netip.Prefix{sub4, sub6}, Networks: []netip.Prefix{net4, net6}, NextHop4: nh4, NextHop6: nh6}
)

func TestPaths(t *testing.T) {
	with := func(f func(*State)) State {
		s := ready
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		s    State
		want []Path
	}{
		{"ready: each subnet with the next hop of its family", ready, []Path{{sub4, nh4}, {sub6, nh6}}},
		{"not ready: nothing", with(func(s *State) { s.Ready = false }), nil},
		{"not ready: not even the network", with(func(s *State) { s.Ready, s.AnnounceNetwork = false, true }), nil},
		{"the network as an aggregate too", with(func(s *State) { s.AnnounceNetwork = true }),
			[]Path{{net4, nh4}, {sub4, nh4}, {net6, nh6}, {sub6, nh6}}},
		{"no IPv6 next hop: IPv4 only", with(func(s *State) { s.NextHop6 = netip.Addr{} }), []Path{{sub4, nh4}}},
		{"no IPv4 next hop: IPv6 only", with(func(s *State) { s.NextHop4 = netip.Addr{} }), []Path{{sub6, nh6}}},
		{"a next hop of the wrong family is not used", with(func(s *State) { s.NextHop4 = nh6 }), []Path{{sub6, nh6}}},
		{"single stack", with(func(s *State) { s.Subnets = []netip.Prefix{sub4} }), []Path{{sub4, nh4}}},
		{"no subnet yet", with(func(s *State) { s.Subnets = nil }), nil},
		{"invalid and duplicate subnets", with(func(s *State) { s.Subnets = []netip.Prefix{{}, sub4, sub4} }), []Path{{sub4, nh4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Paths(tc.s); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Paths = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestTransitions walks a node's life through the mapping and checks
// what each step sends: start, a subnet move, not ready, a new underlay
// address, shutdown.
func TestTransitions(t *testing.T) {
	moved := netip.MustParsePrefix("10.244.9.0/24")
	nhNew := netip.MustParseAddr("192.0.2.99")
	s := State{Subnets: []netip.Prefix{sub4}, NextHop4: nh4}
	type step struct {
		name          string
		change        func(*State)
		add, withdraw []Path
	}
	steps := []step{
		{"starting, not ready: nothing", func(*State) {}, nil, nil},
		{"ready: the subnet", func(s *State) { s.Ready = true }, []Path{{sub4, nh4}}, nil},
		{"subnet moved: the new one announced, the old withdrawn", func(s *State) { s.Subnets = []netip.Prefix{moved} },
			[]Path{{moved, nh4}}, []Path{{sub4, nh4}}},
		{"underlay address changed: re-announced with the new next hop, nothing withdrawn", func(s *State) { s.NextHop4 = nhNew },
			[]Path{{moved, nhNew}}, nil},
		{"no longer ready: withdrawn", func(s *State) { s.Ready = false }, nil, []Path{{moved, nhNew}}},
		{"ready again", func(s *State) { s.Ready = true }, []Path{{moved, nhNew}}, nil},
		{"same state: nothing sent", func(*State) {}, nil, nil},
	}
	var cur []Path
	for _, st := range steps {
		st.change(&s)
		next := Paths(s)
		add, withdraw := Diff(cur, next)
		if !reflect.DeepEqual(add, st.add) || !reflect.DeepEqual(withdraw, st.withdraw) {
			t.Errorf("%s: add %v withdraw %v, want add %v withdraw %v", st.name, add, withdraw, st.add, st.withdraw)
		}
		cur = next
	}
}
