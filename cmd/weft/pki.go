package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/pki"
)

// The operator's side of the cluster CA (package pki): `weft ca init`
// and `weft cert keygen|sign|show|revoke`.

const (
	caUsage   = "usage: weft ca init --dir DIR [--name NAME] [--network CIDR ...] [--lifetime D]"
	certUsage = "usage: weft cert keygen|sign|show|revoke [flags] (weft cert COMMAND -h lists its flags)"
)

// cmdCA is `weft ca`.
func cmdCA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, caUsage)
		return exitUsage
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, caUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "weft ca: unknown command %q (want init)\n", args[0])
	return exitUsage
}

// cmdCert is `weft cert`.
func cmdCert(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, certUsage)
		return exitUsage
	}
	switch args[0] {
	case "keygen":
		return certKeygen(args[1:], stdout, stderr)
	case "sign":
		return certSign(args[1:], stdout, stderr)
	case "show":
		return certShow(args[1:], stdout, stderr)
	case "revoke":
		return certRevoke(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, certUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "weft cert: unknown command %q (want keygen, sign, show or revoke)\n", args[0])
	return exitUsage
}

// parseFlags parses args into fset. A bad command line prints one line and
// -h the flags; done then says to return code.
func parseFlags(fset *flag.FlagSet, synopsis string, args []string, stderr io.Writer) (done bool, code int) {
	fset.SetOutput(io.Discard)
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "usage: %s %s\n", fset.Name(), synopsis)
			fset.SetOutput(stderr)
			fset.PrintDefaults()
			return true, exitOK
		}
		fmt.Fprintf(stderr, "%s: %v\n", fset.Name(), err)
		return true, exitUsage
	}
	return false, exitOK
}

// fail prints a one-line error for the command and returns code.
func fail(stderr io.Writer, code int, cmd, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", cmd, fmt.Sprintf(format, args...))
	return code
}

// durationFlag is a lifetime flag: a Go duration (90m, 12h) or whole days
// (365d), positive. Every PKI command's durations go through it.
type durationFlag struct{ d time.Duration }

// maxDays keeps a day count inside time.Duration (about 292 years).
const maxDays = 100000

func (f *durationFlag) String() string {
	if f == nil || f.d == 0 {
		return ""
	}
	if f.d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", f.d/(24*time.Hour))
	}
	return f.d.String()
}

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	f.d = d
	return nil
}

// parseDuration reads a Go duration or a number of days ("365d").
func parseDuration(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > maxDays {
			return 0, fmt.Errorf("want whole days up to %dd (365d) or a Go duration (12h)", maxDays)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("want a Go duration (90m, 12h) or whole days (365d)")
		}
	}
	if d <= 0 {
		return 0, errors.New("want a positive duration")
	}
	return d, nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// fileName checks a host name for use in a file name (OUT/NAME.key).
func fileName(name string) error {
	if err := pki.CheckName(name); err != nil {
		return err
	}
	if strings.ContainsRune(name, '/') || name == "." || name == ".." || strings.HasPrefix(name, "-") {
		return errors.New("must be usable as a file name (no '/', not '.' or '..', no leading '-')")
	}
	return nil
}

// makeDir makes dir (0700) if it is missing; undo removes it again if it
// was made here.
func makeDir(dir string) (undo func(), err error) {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s is not a directory", dir)
		}
		return func() {}, nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(dir) }, nil
}

// refuseExisting errors if any of paths exists.
func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists; refusing to overwrite it", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func caInit(args []string, stdout, stderr io.Writer) int {
	const cmd = "weft ca init"
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	dir := fset.String("dir", "", "directory for "+pki.CACertFile+" and "+pki.CAKeyFile+" (made if missing)")
	name := fset.String("name", "weft CA", "the CA's name (its certificate's CommonName)")
	var networkArgs listFlag
	fset.Var(&networkArgs, "network", "the address space the CA may grant subnets and pools from, CIDR (repeatable, at most one per address family; "+
		"a family without one gets nothing; default all of IPv4 and IPv6)")
	lifetime := durationFlag{10 * 365 * 24 * time.Hour}
	fset.Var(&lifetime, "lifetime", "how long the CA is valid: a Go duration or days (365d)")
	if done, code := parseFlags(fset, "--dir DIR [--name NAME] [--network CIDR ...] [--lifetime D]", args, stderr); done {
		return code
	}
	switch {
	case fset.NArg() > 0:
		return fail(stderr, exitUsage, cmd, "unexpected argument %q", fset.Arg(0))
	case *dir == "":
		return fail(stderr, exitUsage, cmd, "--dir is required: the directory for %s and %s", pki.CACertFile, pki.CAKeyFile)
	}
	if err := pki.CheckName(*name); err != nil {
		return fail(stderr, exitUsage, cmd, "--name %q: %v", *name, err)
	}
	networks, err := prefixFlags("network", networkArgs)
	if err != nil {
		return fail(stderr, exitUsage, cmd, "%v", err)
	}
	if err := onePerFamily("network", networks); err != nil {
		return fail(stderr, exitUsage, cmd, "%v", err)
	}
	if err := pki.CheckNetworks(networks); err != nil {
		return fail(stderr, exitUsage, cmd, "--network: %v", err)
	}
	ca, err := pki.NewCAFor(*name, networks, lifetime.d, time.Now())
	if err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	if err := ca.Save(*dir); err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	fmt.Fprintf(stdout, "wrote %s and %s (keep %s secret and offline if you can; hosts need only %s)\n",
		filepath.Join(*dir, pki.CACertFile), filepath.Join(*dir, pki.CAKeyFile), pki.CAKeyFile, pki.CACertFile)
	fmt.Fprint(stdout, ca.Cert.Describe(time.Now()))
	return exitOK
}

func certKeygen(args []string, stdout, stderr io.Writer) int {
	const cmd = "weft cert keygen"
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	outDir := fset.String("out-dir", "", "directory for NAME.key and NAME.pub (made if missing)")
	name := fset.String("name", "", "the host's name")
	if done, code := parseFlags(fset, "--out-dir OUT --name NAME", args, stderr); done {
		return code
	}
	if code, bad := badArgs(fset, cmd, stderr, "out-dir", "name"); bad {
		return code
	}
	if err := fileName(*name); err != nil {
		return fail(stderr, exitUsage, cmd, "--name %q: %v", *name, err)
	}
	keyPath, pubPath := filepath.Join(*outDir, *name+".key"), filepath.Join(*outDir, *name+".pub")
	if err := refuseExisting(keyPath, pubPath); err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	undo, err := makeDir(*outDir)
	if err != nil {
		return fail(stderr, exitFailure, cmd, "--out-dir: %v", err)
	}
	if err := writeKeyPair(keyPath, pubPath, key); err != nil {
		undo()
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	fmt.Fprintf(stdout, "wrote %s (secret, stays on this host) and %s (give it to the CA: weft cert sign --public-key %s)\n", keyPath, pubPath, pubPath)
	return exitOK
}

// writeKeyPair writes the private key and, if pubPath is not "", the public
// key; on failure it removes what it wrote.
func writeKeyPair(keyPath, pubPath string, key ed25519.PrivateKey) error {
	if err := pki.WriteKey(keyPath, key); err != nil {
		return err
	}
	if pubPath == "" {
		return nil
	}
	if err := pki.WritePublicKey(pubPath, key.Public().(ed25519.PublicKey)); err != nil {
		return errors.Join(err, os.Remove(keyPath))
	}
	return nil
}

// prefixFlags checks repeated CIDR flag values: valid and canonical.
func prefixFlags(flagName string, values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: not a CIDR prefix (want e.g. 10.244.1.0/24 or fd00:1::/64)", flagName, v)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("--%s %q: host bits are set; the prefix is %s", flagName, v, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// onePerFamily refuses two prefixes of one address family.
func onePerFamily(flagName string, ps []netip.Prefix) error {
	for i, a := range ps {
		for _, b := range ps[:i] {
			if a.Addr().Is4() == b.Addr().Is4() {
				return fmt.Errorf("--%s %s and --%s %s: at most one %s per address family", flagName, b, flagName, a, flagName)
			}
		}
	}
	return nil
}

// networkList words a CA's networks.
func networkList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func certSign(args []string, stdout, stderr io.Writer) int {
	const cmd = "weft cert sign"
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	caDir := fset.String("ca-dir", "", "the CA's directory ("+pki.CACertFile+", "+pki.CAKeyFile+")")
	name := fset.String("name", "", "the host's name")
	var subnets, pools listFlag
	fset.Var(&subnets, "subnet", "a subnet the host may claim, CIDR (repeatable; at most one per address family)")
	fset.Var(&pools, "pool", "a pool the host may pick automatic subnets from, CIDR (repeatable)")
	groups := fset.String("groups", "", "the host's groups, comma-separated")
	lifetime := durationFlag{365 * 24 * time.Hour}
	fset.Var(&lifetime, "lifetime", "how long the certificate is valid: a Go duration or days (365d)")
	pubFile := fset.String("public-key", "", "the host's public key (weft cert keygen's NAME.pub); without it a key pair is made and NAME.key written")
	outDir := fset.String("out-dir", "", "directory for NAME.crt (and NAME.key; made if missing)")
	const synopsis = "--ca-dir DIR --name NAME (--subnet CIDR ... | --pool CIDR ...) [--groups G,...] [--lifetime D] [--public-key FILE] --out-dir OUT"
	if done, code := parseFlags(fset, synopsis, args, stderr); done {
		return code
	}
	if code, bad := badArgs(fset, cmd, stderr, "ca-dir", "name", "out-dir"); bad {
		return code
	}
	switch {
	case len(subnets) == 0 && len(pools) == 0:
		return fail(stderr, exitUsage, cmd, "give --subnet (the host's fixed subnets) or --pool (where it picks its own)")
	case len(subnets) > 0 && len(pools) > 0:
		return fail(stderr, exitUsage, cmd, "give --subnet or --pool, not both (--subnet %s, --pool %s)", subnets[0], pools[0])
	}
	if err := fileName(*name); err != nil {
		return fail(stderr, exitUsage, cmd, "--name %q: %v", *name, err)
	}
	req := pki.Request{Name: *name, Lifetime: lifetime.d}
	var err error
	if req.Subnets, err = prefixFlags("subnet", subnets); err != nil {
		return fail(stderr, exitUsage, cmd, "%v", err)
	}
	if err := onePerFamily("subnet", req.Subnets); err != nil {
		return fail(stderr, exitUsage, cmd, "%v", err)
	}
	if req.Pools, err = prefixFlags("pool", pools); err != nil {
		return fail(stderr, exitUsage, cmd, "%v", err)
	}
	if *groups != "" {
		req.Groups = strings.Split(*groups, ",")
		if err := pki.CheckGroups(req.Groups); err != nil {
			return fail(stderr, exitUsage, cmd, "--groups %q: %v", *groups, err)
		}
	}
	ca, err := pki.LoadCA(*caDir)
	if err != nil {
		return fail(stderr, exitFailure, cmd, "--ca-dir %s: %v", *caDir, err)
	}
	for _, g := range []struct {
		flag string
		ps   []netip.Prefix
	}{{"subnet", req.Subnets}, {"pool", req.Pools}} {
		for _, p := range g.ps {
			if !ca.Cert.MayGrant(p) {
				return fail(stderr, exitUsage, cmd, "--%s %s: outside the networks of the CA %q (%s); grant inside them, or make a CA with wider ones (weft ca init --network)",
					g.flag, p, ca.Cert.Name, networkList(ca.Cert.Networks))
			}
		}
	}
	now := time.Now()
	if end := now.Add(lifetime.d); end.After(ca.Cert.NotAfter) {
		return fail(stderr, exitUsage, cmd, "--lifetime %s: the certificate would end %s, after the CA %q expires (%s); give at most %dd, or rotate the CA",
			&lifetime, end.UTC().Format(time.RFC3339), ca.Cert.Name, ca.Cert.NotAfter.UTC().Format(time.RFC3339), ca.Cert.NotAfter.Sub(now)/(24*time.Hour))
	}
	crtPath, keyPath := filepath.Join(*outDir, *name+".crt"), ""
	if *pubFile != "" {
		if req.PublicKey, err = pki.ReadPublicKey(*pubFile); err != nil {
			return fail(stderr, exitUsage, cmd, "--public-key: %v", err)
		}
	} else {
		keyPath = filepath.Join(*outDir, *name+".key")
	}
	if err := refuseExisting(crtPath); err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	if keyPath != "" {
		if err := refuseExisting(keyPath); err != nil {
			return fail(stderr, exitFailure, cmd, "%v", err)
		}
	}
	var key ed25519.PrivateKey
	if keyPath != "" {
		k, err := pki.GenerateKey()
		if err != nil {
			return fail(stderr, exitFailure, cmd, "%v", err)
		}
		key, req.PublicKey = k, k.Public().(ed25519.PublicKey)
	}
	cert, err := ca.Sign(req, now)
	if err != nil {
		// The flags passed their checks above; what Sign refuses beyond
		// them (overlapping pools, too many grants) is still the request's.
		return fail(stderr, exitUsage, cmd, "%v", err)
	}
	undo, err := makeDir(*outDir)
	if err != nil {
		return fail(stderr, exitFailure, cmd, "--out-dir: %v", err)
	}
	if keyPath != "" {
		if err := writeKeyPair(keyPath, "", key); err != nil {
			undo()
			return fail(stderr, exitFailure, cmd, "%v", err)
		}
	}
	if err := pki.WriteCertFile(crtPath, cert); err != nil {
		if keyPath != "" {
			_ = os.Remove(keyPath)
		}
		undo()
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	if keyPath != "" {
		fmt.Fprintf(stdout, "wrote %s and %s\n", crtPath, keyPath)
	} else {
		fmt.Fprintf(stdout, "wrote %s\n", crtPath)
	}
	fmt.Fprint(stdout, cert.Describe(now))
	return exitOK
}

func certShow(args []string, stdout, stderr io.Writer) int {
	const cmd = "weft cert show"
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var caFiles, crlFiles listFlag
	fset.Var(&caFiles, "ca-cert", "a trusted CA certificate file: verify against it (repeatable)")
	fset.Var(&crlFiles, "crl", "a CRL file of a trusted CA (repeatable; needs --ca-cert)")
	if done, code := parseFlags(fset, "[--ca-cert FILE ...] [--crl FILE ...] FILE...", args, stderr); done {
		return code
	}
	switch {
	case fset.NArg() == 0:
		return fail(stderr, exitUsage, cmd, "no certificate file given (weft cert show [--ca-cert FILE] FILE...)")
	case len(crlFiles) > 0 && len(caFiles) == 0:
		return fail(stderr, exitUsage, cmd, "--crl %s needs --ca-cert: a CRL counts only with its CA", crlFiles[0])
	}
	var trust *pki.Trust
	if len(caFiles) > 0 {
		var cas []*pki.Cert
		for _, f := range caFiles {
			certs, err := pki.ReadCerts(f)
			if err != nil {
				return fail(stderr, exitUsage, cmd, "--ca-cert: %v", err)
			}
			cas = append(cas, certs...)
		}
		var crls []*pki.CRL
		for _, f := range crlFiles {
			l, err := pki.ReadCRL(f)
			if err != nil {
				return fail(stderr, exitUsage, cmd, "--crl: %v", err)
			}
			crls = append(crls, l)
		}
		var err error
		if trust, err = pki.NewTrust(cas, crls); err != nil {
			return fail(stderr, exitUsage, cmd, "--ca-cert %s / --crl %s: %v", strings.Join(caFiles, ","), strings.Join(crlFiles, ","), err)
		}
	}
	code := exitOK
	now := time.Now()
	for i, f := range fset.Args() {
		certs, err := pki.ReadCerts(f)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
			code = exitFailure
			continue
		}
		for j, c := range certs {
			if i+j > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "%s: ", f)
			fmt.Fprint(stdout, c.Describe(now))
			if trust == nil {
				continue
			}
			verdict := "trusted"
			if c.IsCA {
				verdict = "a CA certificate (not verified)"
				if slices.ContainsFunc(trust.CAs(), func(t *pki.Cert) bool { return t.Fingerprint == c.Fingerprint }) {
					verdict = "a trusted CA"
				}
			} else if err := trust.Verify(c, now); err != nil {
				verdict = "NOT trusted: " + err.Error()
				code = exitFailure
			}
			fmt.Fprintf(stdout, "  %-12s %s\n", "trust:", verdict)
		}
	}
	return code
}

// parseSerial reads a serial number in hex, as openssl and weft cert show
// print it (colons allowed).
func parseSerial(s string) (*big.Int, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(s), "0x"), ":", "")
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || h == "" || n.Sign() <= 0 {
		return nil, errors.New("want a positive hexadecimal serial number (as weft cert show prints it)")
	}
	return n, nil
}

func certRevoke(args []string, stdout, stderr io.Writer) int {
	const cmd = "weft cert revoke"
	fset := flag.NewFlagSet(cmd, flag.ContinueOnError)
	caDir := fset.String("ca-dir", "", "the CA's directory; its "+pki.CRLFile+" is re-issued")
	var certFiles, serialArgs listFlag
	fset.Var(&certFiles, "cert", "a certificate file to revoke (repeatable)")
	fset.Var(&serialArgs, "serial", "a serial number to revoke, hex (repeatable)")
	crlLifetime := durationFlag{30 * 24 * time.Hour}
	fset.Var(&crlLifetime, "crl-lifetime", "how long the new CRL is current (its NextUpdate): a Go duration or days")
	if done, code := parseFlags(fset, "--ca-dir DIR (--cert FILE | --serial HEX) ... [--crl-lifetime D]", args, stderr); done {
		return code
	}
	if code, bad := badArgs(fset, cmd, stderr, "ca-dir"); bad {
		return code
	}
	if len(certFiles) == 0 && len(serialArgs) == 0 {
		return fail(stderr, exitUsage, cmd, "give --cert FILE or --serial HEX: what to revoke")
	}
	var serials []*big.Int
	var what []string
	for _, s := range serialArgs {
		n, err := parseSerial(s)
		if err != nil {
			return fail(stderr, exitUsage, cmd, "--serial %q: %v", s, err)
		}
		serials = append(serials, n)
		what = append(what, fmt.Sprintf("serial %x", n))
	}
	ca, err := pki.LoadCA(*caDir)
	if err != nil {
		return fail(stderr, exitFailure, cmd, "--ca-dir %s: %v", *caDir, err)
	}
	for _, f := range certFiles {
		certs, err := pki.ReadCerts(f)
		if err != nil {
			return fail(stderr, exitUsage, cmd, "--cert: %v", err)
		}
		for _, c := range certs {
			if err := c.X509.CheckSignatureFrom(ca.Cert.X509); err != nil {
				return fail(stderr, exitUsage, cmd, "--cert %s: %q was not issued by the CA %q", f, c.Name, ca.Cert.Name)
			}
			serials = append(serials, c.X509.SerialNumber)
			what = append(what, fmt.Sprintf("%s (serial %x)", c.Name, c.X509.SerialNumber))
		}
	}
	crlPath := filepath.Join(*caDir, pki.CRLFile)
	prev, err := pki.ReadCRL(crlPath)
	if errors.Is(err, fs.ErrNotExist) {
		prev, err = nil, nil
	}
	if err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	now := time.Now()
	l, err := ca.Revoke(prev, serials, now, crlLifetime.d)
	if err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	if err := pki.WriteCRLFile(crlPath, l); err != nil {
		return fail(stderr, exitFailure, cmd, "%v", err)
	}
	fmt.Fprintf(stdout, "revoked %s\nwrote %s: CRL number %v, %d revoked in all, current until %s; hand it to every host\n",
		strings.Join(what, ", "), crlPath, l.List.Number, len(l.List.RevokedCertificateEntries), l.List.NextUpdate.UTC().Format(time.RFC3339))
	return exitOK
}

// badArgs refuses positional arguments and, in the order given, the first
// of the required flags left empty; it reports the exit code when it did.
func badArgs(fset *flag.FlagSet, cmd string, stderr io.Writer, required ...string) (int, bool) {
	if fset.NArg() > 0 {
		return fail(stderr, exitUsage, cmd, "unexpected argument %q", fset.Arg(0)), true
	}
	for _, name := range required {
		if fset.Lookup(name).Value.String() == "" {
			return fail(stderr, exitUsage, cmd, "--%s is required", name), true
		}
	}
	return 0, false
}
