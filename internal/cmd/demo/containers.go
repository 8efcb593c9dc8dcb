package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftnet/weft/internal/netlab"
)

// container is a network namespace that weft, as its CNI plugin, gave an
// address of its host's subnet.
type container struct {
	name string
	host *host
	ns   *netlab.Host
	ip   netip.Addr
}

// cniPluginDir is where the reference plugins (bridge, host-local) are.
func cniPluginDir() (string, error) {
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("the CNI reference plugins (bridge, host-local) are not in /usr/lib/cni or /opt/cni/bin: apt-get install -y containernetworking-plugins iptables")
}

// containers starts one container on every host the way a container
// runtime does: it runs weft as the "weft" CNI plugin (ADD) with the
// network config `weft cni conflist` prints, pointed at this demo's files.
func (d *demo) containers(ctx context.Context) error {
	pluginDir, err := cniPluginDir()
	if err != nil {
		return err
	}
	fmt.Println("== containers: weft as the CNI plugin of each host (bridge cni0 + host-local over the host's subnet) ==")
	for _, h := range d.hosts {
		conf, err := d.cniConfig(ctx, h)
		if err != nil {
			return err
		}
		name := h.name + "c1" // netlab host names are short
		ns, err := d.lab.Host(name)
		if err != nil {
			return err
		}
		cmd := h.ns.Command(ctx, d.weft)
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+name, "CNI_NETNS=/run/netns/"+ns.NS(),
			"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(d.weft)+":"+pluginDir)
		cmd.Stdin = bytes.NewReader(conf)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("CNI ADD of %s on %s: %w: %s", name, h.name, err, bytes.TrimSpace(out))
		}
		var res struct {
			IPs []struct {
				Address netip.Prefix `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
			return fmt.Errorf("CNI ADD of %s on %s: result %s: %v", name, h.name, out, err)
		}
		c := &container{name: name, host: h, ns: ns, ip: res.IPs[0].Address.Addr()}
		d.ctrs = append(d.ctrs, c)
		fmt.Printf("  %-6s on %s: eth0 %s (weft0 %s, gateway on cni0)\n", name, h.name, res.IPs[0].Address, h.overlay())
	}
	fmt.Println()
	return d.containerTraffic(ctx)
}

// cniConfig is the weft entry of `weft cni conflist` as a network config,
// with this demo's subnet file, control socket and state directories.
func (d *demo) cniConfig(ctx context.Context, h *host) ([]byte, error) {
	dir := filepath.Join(d.lab.Dir(), h.name, "cni")
	out, err := h.ns.Run(ctx, d.weft, "cni", "conflist", "--name", "weft", "--cni-version", "1.0.0",
		"--subnet-file", h.files.SubnetFile, "--socket", h.files.Socket, "--data-dir", filepath.Join(dir, "weft"))
	if err != nil {
		return nil, fmt.Errorf("weft cni conflist on %s: %w", h.name, err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(out, &list); err != nil || len(list.Plugins) == 0 {
		return nil, fmt.Errorf("weft cni conflist on %s: %s: %v", h.name, out, err)
	}
	conf := list.Plugins[0]
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	conf["ipam"] = map[string]any{"dataDir": filepath.Join(dir, "ipam")}
	return json.Marshal(conf)
}

// containerTraffic pings from the first host's container to every other
// container, and measures TCP between containers on two hosts.
func (d *demo) containerTraffic(ctx context.Context) error {
	const count = 3
	src := d.ctrs[0]
	fmt.Printf("== container ping: from %s to the containers on the other hosts ==\n", src.name)
	var failed []string
	for _, dst := range d.ctrs[1:] {
		res, err := src.ns.Ping(ctx, dst.ip, count)
		if err != nil {
			return err
		}
		if res.Received == 0 {
			fmt.Printf("  %s -> %s  %-11s NO REPLY\n", src.name, dst.name, dst.ip)
			failed = append(failed, dst.name)
			continue
		}
		fmt.Printf("  %s -> %s  %-11s %d/%d replies  avg RTT %.3f ms\n", src.name, dst.name, dst.ip, res.Received, res.Sent,
			float64(res.RTTAvg.Microseconds())/1000)
	}
	fmt.Println()
	if len(failed) > 0 {
		return fmt.Errorf("no ping reply from %s to %s", src.name, strings.Join(failed, ", "))
	}
	dst := d.ctrs[len(d.ctrs)-1]
	fmt.Printf("== iperf3 TCP container %s -> container %s (%d s) ==\n", src.name, dst.name, d.seconds)
	if _, err := dst.ns.IPerf3Server(iperfPort + 1); err != nil {
		return err
	}
	res, err := src.ns.IPerf3Client(ctx, dst.ip, netlab.IPerf3Options{Port: iperfPort + 1, Seconds: d.seconds})
	if err != nil {
		return err
	}
	fmt.Printf("  %s -> %s: %.0f Mbit/s received, %d retransmits\n\n", src.name, dst.name, res.ReceivedBPS/1e6, res.Retransmits)
	return nil
}
