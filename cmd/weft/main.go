// Command weft is a userspace TUN overlay router: every host owns one subnet
// of the overlay network, learns its peers by gossip and carries IP traffic
// between them over UDP or VXLAN.
//
// Usage:
//
//	weft run [flags]       run the daemon (weft run -h lists the flags)
//	weft status [--json]   show a running daemon's node, peers and counters
//	weft cni conflist      print a CNI network config (run by a runtime, weft is the "weft" CNI plugin)
//	weft keygen            print a new gossip encryption key
//	weft ca init           make the cluster CA (ca.crt, ca.key)
//	weft cert keygen|sign|show|revoke
//	                       make a host's key pair, sign its certificate, show
//	                       and verify certificates, revoke them (ca.crl)
//	weft version           print the version
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/weftnet/weft/cni"
	"github.com/weftnet/weft/config"
	"github.com/weftnet/weft/node"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad command line or config
)

func main() {
	if os.Getenv("CNI_COMMAND") != "" { // run by a container runtime as its "weft" CNI plugin
		os.Exit(cni.Main(version))
	}
	os.Exit(weft(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func weft(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: weft run|status|cni|keygen|ca|cert|version [flags]")
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stderr)
	case "status":
		return cmdStatus(ctx, args[1:], stdout, stderr)
	case "keygen":
		return cmdKeygen(stdout, stderr)
	case "cni":
		return cni.Command(ctx, args[1:], stdout, stderr)
	case "ca":
		return cmdCA(args[1:], stdout, stderr)
	case "cert":
		return cmdCert(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "weft %s (%s, %s)\n", version, revision(), runtime.Version())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, "usage: weft run|status|cni|keygen|ca|cert|version [flags]; weft run -h lists the daemon's flags; weft cni conflist prints a CNI network config; weft ca init and weft cert keygen|sign|show|revoke run the cluster CA")
		return exitOK
	}
	fmt.Fprintf(stderr, "weft: unknown command %q (want run, status, cni, keygen, ca, cert or version)\n", args[0])
	return exitUsage
}

// cmdKeygen prints a new random 32-byte gossip key, base64, for
// --gossip-key-file.
func cmdKeygen(stdout, stderr io.Writer) int {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		fmt.Fprintf(stderr, "weft: keygen: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
	return exitOK
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("weft status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", config.DefaultSocket, "the daemon's control socket")
	addr := fs.String("addr", "", "ask the daemon's metrics listener (host:port) instead of the socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rep, err := node.FetchStatus(ctx, *socket, *addr)
	if err != nil {
		fmt.Fprintf(stderr, "weft: %v\n", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return exitOK
	}
	printStatus(stdout, rep)
	return exitOK
}
