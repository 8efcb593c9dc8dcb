package main

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/weftnet/weft/internal/netlab"
)

// The wireguard-go path: the userspace WireGuard that issue 13's encrypted
// targets are set against. wireguard-go is installed by `make bench` into
// bin/tools at the version pinned in the Makefile (WIREGUARD_GO_VERSION,
// the module version weft's go.mod already uses for its tun baseline); `wg`
// comes from Debian's wireguard-tools. wireguard-go turns on the TUN's
// offloads and UDP GSO/GRO by itself.
var wireguardPath = pathDef{
	Name: "wireguard-go",
	Desc: "wireguard-go (bin/tools, pinned in the Makefile) configured with wg: ChaCha20-Poly1305, TUN offloads and UDP GSO/GRO, MTU 1420, port 51820, devices wg-a and wg-b",
	Kind: kindWireguardGo,
}

// wgDev names each host's device after the host: wireguard-go's UAPI
// socket is /var/run/wireguard/<dev>.sock, and /run is shared by all
// namespaces, so two wg0s would talk to one socket.
func wgDev(h *netlab.Host) string { return "wg-" + h.Name()[len(h.Name())-1:] }

const (
	wgPort = "51820"
	wgMTU  = "1420"
)

// wgBinary finds wireguard-go: bin/tools/wireguard (go install names it
// after the module), then wireguard-go in $PATH.
func (b *bench) wgBinary() (string, error) {
	if p := filepath.Join(b.root, "bin", "tools", "wireguard"); fileExists(p) {
		return p, nil
	}
	if p, err := exec.LookPath("wireguard-go"); err == nil {
		return p, nil
	}
	return "", errors.New("wireguard-go not found in bin/tools or $PATH (make bench installs it; or: GOBIN=$PWD/bin/tools go install golang.zx2c4.com/wireguard@<version in the Makefile>)")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// wgKey is a WireGuard key pair, base64 as wg takes it.
type wgKey struct{ priv, pub string }

func newWGKey() (wgKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return wgKey{}, err
	}
	return wgKey{base64.StdEncoding.EncodeToString(k.Bytes()), base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())}, nil
}

// setupWireguardGo starts wireguard-go on both hosts and configures it
// with wg the way wg-quick would for a two-host mesh. The processes are
// returned for stopWireguardGo.
func (b *bench) setupWireguardGo(ctx context.Context) ([]*netlab.Proc, error) {
	bin, err := b.wgBinary()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("wg"); err != nil {
		return nil, errors.New("wg not found: apt-get install wireguard-tools")
	}
	dir, err := os.MkdirTemp("", "netbench-wg-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ka, err := newWGKey()
	if err != nil {
		return nil, err
	}
	kb, err := newWGKey()
	if err != nil {
		return nil, err
	}
	type side struct {
		h              *netlab.Host
		key            wgKey
		peerPub        string
		addr, peerAddr string
		peerNet        string
	}
	var procs []*netlab.Proc
	for _, s := range []side{
		{b.a, ka, kb.pub, overlayA.String(), underlayB.String(), subnetB},
		{b.b, kb, ka.pub, overlayB.String(), underlayA.String(), subnetA},
	} {
		proc, err := s.h.StartEnv([]string{"WG_PROCESS_FOREGROUND=1"}, bin, "-f", wgDev(s.h))
		if err != nil {
			return procs, err
		}
		procs = append(procs, proc)
		if err := waitLink(ctx, s.h, wgDev(s.h), proc); err != nil {
			return procs, err
		}
		keyFile := filepath.Join(dir, s.h.Name()+".key")
		if err := os.WriteFile(keyFile, []byte(s.key.priv+"\n"), 0o600); err != nil {
			return procs, err
		}
		cctx, cancel := context.WithTimeout(ctx, setupCmdTimeout)
		if _, err := s.h.Run(cctx, "wg", "set", wgDev(s.h), "listen-port", wgPort, "private-key", keyFile,
			"peer", s.peerPub, "endpoint", s.peerAddr+":"+wgPort, "allowed-ips", s.peerNet); err != nil {
			cancel()
			return procs, err
		}
		for _, c := range [][]string{
			{"addr", "add", s.addr + "/32", "dev", wgDev(s.h)},
			{"link", "set", wgDev(s.h), "mtu", wgMTU, "up"},
			{"route", "add", s.peerNet, "dev", wgDev(s.h)},
		} {
			if _, err := s.h.IP(cctx, c...); err != nil {
				cancel()
				return procs, err
			}
		}
		cancel()
	}
	return procs, nil
}

// waitLink waits for wireguard-go to create its device.
func waitLink(ctx context.Context, h *netlab.Host, dev string, proc *netlab.Proc) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := h.LinkExists(ctx, dev); ok {
			return nil
		}
		if proc.Exited() {
			return fmt.Errorf("wireguard-go on %s exited: %s", h.Name(), lastLines(proc.Logs(), 5))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wireguard-go on %s: no %s within 10 s", h.Name(), dev)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopWireguardGo ends the wireguard-go processes (the device goes with
// them) and deletes a device that outlived its process.
func (b *bench) stopWireguardGo(procs []*netlab.Proc) error {
	var errs []error
	for _, p := range procs {
		if err := p.Stop(daemonStopWait); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	for _, h := range []*netlab.Host{b.a, b.b} {
		ctx, cancel := context.WithTimeout(context.Background(), setupCmdTimeout)
		if ok, _ := h.LinkExists(ctx, wgDev(h)); ok {
			_, _ = h.IP(ctx, "link", "del", wgDev(h))
		}
		cancel()
	}
	return errors.Join(errs...)
}
