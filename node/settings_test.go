package node

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/weftnet/weft/lease"
)

// Every setting outside Live is either reloadable (it would be in Live) or
// fixed, and a fixed one that changes is reported by fixedChanges, so a
// reload refuses it: a new Settings field that is in neither fails here.
func TestEverySettingIsFixedOrLive(t *testing.T) {
	var base Settings
	st := reflect.TypeOf(base)
	for i := range st.NumField() {
		f := st.Field(i)
		if f.Name == "Live" {
			continue
		}
		changed := base
		v := reflect.ValueOf(&changed).Elem().Field(i)
		if !mutate(v) {
			t.Errorf("Settings.%s (%s): the test cannot change this type; teach mutate it", f.Name, f.Type)
			continue
		}
		if got := fixedChanges(base, changed); len(got) == 0 {
			t.Errorf("Settings.%s changed but fixedChanges reports nothing: add it to fixedChanges (a restart) or move it to Live (a reload)", f.Name)
		}
	}
}

// mutate sets v to a value other than its zero value.
func mutate(v reflect.Value) bool {
	switch x := v.Addr().Interface().(type) {
	case *netip.Prefix:
		*x = netip.MustParsePrefix("192.0.2.0/24")
	case *netip.Addr:
		*x = netip.MustParseAddr("192.0.2.1")
	case *lease.Pool:
		x.Bits = 24
	default:
		switch v.Kind() {
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			v.SetInt(1)
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			v.SetUint(1)
		case reflect.String:
			v.SetString("x")
		case reflect.Array:
			return mutate(v.Index(0))
		case reflect.Slice:
			v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem()))
			return mutate(v.Index(0))
		case reflect.Struct:
			for i := range v.NumField() {
				if v.Field(i).CanSet() && mutate(v.Field(i)) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return true
}
