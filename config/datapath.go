package config

import (
	"cmp"
	"flag"
	"fmt"
	"slices"

	"github.com/weftnet/weft/kernelvx"
	"github.com/weftnet/weft/node"
)

// datapathFlags declares the data path engine's flags.
func datapathFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Datapath, "datapath", "", "data path: userspace (weft's own, every encapsulation, --encrypt), kernel (the kernel's VXLAN device programmed by weft: plaintext --encap vxlan only) or auto (the kernel where it can, else userspace) (default userspace)")
	fs.StringVar(&c.VXLANDevice, "vxlan-device", "", "the kernel data path's VXLAN device name (default "+kernelvx.DefaultName+")")
}

// validateEngine checks datapath and vxlanDevice: --datapath kernel with a
// setting only the userspace path honours (node.KernelObstacles) is a
// usage error naming both; auto leaves the choice to the node, which makes
// it at start.
func validateEngine(c Config, s *node.Settings, src source) error {
	mode := node.DatapathMode(cmp.Or(c.Datapath, string(node.DatapathUserspace)))
	if !slices.Contains(node.DatapathModes, mode) {
		return src.bad("datapath", "datapath", c.Datapath, "want userspace, kernel or auto")
	}
	s.Datapath = mode
	s.VXLANDevice = cmp.Or(c.VXLANDevice, kernelvx.DefaultName)
	what := src.name("vxlan-device", "vxlanDevice")
	if err := validIfName(what, s.VXLANDevice); err != nil {
		return err
	}
	if s.VXLANDevice == s.TUN {
		return src.bad("vxlan-device", "vxlanDevice", s.VXLANDevice, fmt.Sprintf("the TUN device's name (%s): the kernel data path keeps the TUN beside its VXLAN device", src.name("tun", "tun")))
	}
	if mode != node.DatapathKernel {
		return nil
	}
	if obs := node.KernelObstacles(*s); len(obs) > 0 {
		o := obs[0]
		setting := src.name(o.Flag, o.Key)
		if o.Value != "" {
			setting += " " + o.Value
		}
		return usagef("%s kernel with %s: %s", src.name("datapath", "datapath"), setting, o.Why)
	}
	return nil
}
