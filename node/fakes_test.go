package node

import (
	"github.com/weftnet/weft/internal/fakes"
	"github.com/weftnet/weft/router"
)

// fakeTUN is a fakes.TUN as the node sees it: its queues are
// router.Devices (the one method fakes cannot give, having no router
// import).
type fakeTUN struct{ *fakes.TUN }

func (d fakeTUN) Queues() []router.Device {
	var qs []router.Device
	for _, q := range d.Devices() {
		qs = append(qs, q)
	}
	return qs
}
