package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Paths, relative to this package's directory (go test runs tests there).
const (
	unitFile       = "systemd/weft.service"
	dropInFile     = "systemd/nonroot.conf"
	configFile     = "weft.yaml"
	promConfigFile = "prometheus/prometheus.yml"
	dashboardFile  = "grafana/weft-dashboard.json"
	nfpmFile       = "nfpm.yaml"
	makeFragment   = "deploy.mk"
)

// ---------------------------------------------------------------------------
// Metric allow-list: the contract of metrics.go (every metric weft exports,
// with its type and labels; node's TestMetricsContract checks it against a
// live registry). The dashboard may use only these.

var knownMetrics = Metrics()

// Labels every scraped series has.
var targetLabels = []string{"instance", "job"}

// ---------------------------------------------------------------------------
// Helpers

// needTool fails the test (not skips: CI installs these) when a tool is missing.
func needTool(t *testing.T, tool, install string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found in PATH; install it with: %s", tool, install)
	}
	return p
}

const (
	aptSystemd    = "apt-get install -y systemd"
	aptPrometheus = "apt-get install -y --no-install-recommends prometheus   (provides promtool)"
	aptMake       = "apt-get install -y make"
	aptDpkg       = "apt-get install -y dpkg"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// run runs a command and returns stdout and stderr separately.
func run(t *testing.T, dir string, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b := readFile(t, src)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// ---------------------------------------------------------------------------
// systemd unit

// unitSettings parses a unit file into section -> key -> values (in order).
func unitSettings(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value line: %q", unitFile, i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// verifyUnit runs `systemd-analyze verify` on the unit file at path (a copy in
// a temporary directory, drop-ins beside it) and fails on any output line
// about it.
//
// Lines that name another unit file by path (e.g.
// "/lib/systemd/system/foo.service:3: Unknown key") are logged, not fatal:
// verify loads the units weft.service depends on (network-online.target,
// multi-user.target, ...) from the machine, and what some other package
// installed there says nothing about our unit. With --recursive-errors=no
// such lines do not make verify fail either. Nothing else is filtered.
func verifyUnit(t *testing.T, path string) {
	t.Helper()
	sa := needTool(t, "systemd-analyze", aptSystemd)
	stdout, stderr, err := run(t, filepath.Dir(path), nil, sa, "verify", "--recursive-errors=no", path)
	dir := filepath.Dir(path) + "/"
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(stdout+"\n"+stderr), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "/") && !strings.HasPrefix(line, dir) {
			t.Logf("ignored (not our unit): %s", line)
			continue
		}
		bad = append(bad, line)
	}
	if err != nil || len(bad) > 0 {
		t.Fatalf("systemd-analyze verify %s: err=%v\n%s", path, err, strings.Join(bad, "\n"))
	}
}

// stubUnit writes the shipped unit into dir with /usr/bin/weft rewritten to a
// copy of /bin/true in dir, and returns the unit's path.
//
// verify checks that every Exec*= binary exists and is executable; weft is
// not installed on a CI machine, so a stand-in takes its place. Only that
// one path changes: /bin/kill (ExecReload) must exist as shipped.
func stubUnit(t *testing.T, dir string) string {
	t.Helper()
	stub := filepath.Join(dir, "weft")
	copyFile(t, "/bin/true", stub, 0o755)
	unit := strings.ReplaceAll(string(readFile(t, unitFile)), "/usr/bin/weft", stub)
	p := filepath.Join(dir, "weft.service")
	if err := os.WriteFile(p, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSystemdUnitVerify(t *testing.T) {
	t.Run("shipped-with-stub-binary", func(t *testing.T) {
		verifyUnit(t, stubUnit(t, t.TempDir()))
	})

	// The check must be able to fail: a misspelt key and a bad value are
	// reported (verify itself exits 0 for those, hence the output check).
	t.Run("detects-errors", func(t *testing.T) {
		sa := needTool(t, "systemd-analyze", aptSystemd)
		dir := t.TempDir()
		p := stubUnit(t, dir)
		b := readFile(t, p)
		b = regexp.MustCompile(`(?m)^ProtectHome=yes$`).ReplaceAll(b, []byte("ProtectHom=yes"))
		b = regexp.MustCompile(`(?m)^DevicePolicy=closed$`).ReplaceAll(b, []byte("DevicePolicy=shut"))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, _ := run(t, dir, nil, sa, "verify", "--recursive-errors=no", p)
		out := stdout + stderr
		for _, want := range []string{"ProtectHom", "device policy"} {
			if !strings.Contains(out, want) {
				t.Errorf("systemd-analyze verify did not report %q in a broken unit; output:\n%s", want, out)
			}
		}
	})

	// On a machine with the package installed, the unit as shipped.
	t.Run("shipped-as-is", func(t *testing.T) {
		if _, err := os.Stat("/usr/bin/weft"); err != nil {
			t.Skip("/usr/bin/weft not installed; the stub-binary subtest covers the unit")
		}
		dir := t.TempDir()
		copyFile(t, unitFile, filepath.Join(dir, "weft.service"), 0o644)
		verifyUnit(t, filepath.Join(dir, "weft.service"))
	})

	t.Run("nonroot-drop-in", func(t *testing.T) {
		dir := t.TempDir()
		p := stubUnit(t, dir)
		dropIn := strings.ReplaceAll(string(readFile(t, dropInFile)), "/usr/bin/weft", filepath.Join(dir, "weft"))
		if err := os.MkdirAll(filepath.Join(dir, "weft.service.d"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "weft.service.d", "nonroot.conf"), []byte(dropIn), 0o644); err != nil {
			t.Fatal(err)
		}
		verifyUnit(t, p)
		sa := needTool(t, "systemd-analyze", aptSystemd)
		out, _, err := run(t, dir, nil, sa, "security", "--offline=yes", p)
		if err != nil {
			t.Fatalf("systemd-analyze security: %v\n%s", err, out)
		}
		if !regexp.MustCompile(`✓ User=/DynamicUser=\s+Service runs under a transient non-root user`).MatchString(out) {
			t.Errorf("with nonroot.conf the service should run as a dynamic non-root user:\n%s", out)
		}
	})
}

// The exposure score of the sandbox must not regress. 3.0 leaves a little
// room above today's 2.4 for a justified change.
func TestSystemdUnitSecurity(t *testing.T) {
	sa := needTool(t, "systemd-analyze", aptSystemd)
	dir := t.TempDir()
	p := stubUnit(t, dir)
	stdout, stderr, err := run(t, dir, nil, sa, "security", "--offline=yes", "--threshold=30", p)
	m := regexp.MustCompile(`Overall exposure level for weft.service: ([0-9.]+)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no exposure level in systemd-analyze security output:\n%s\n%s", stdout, stderr)
	}
	t.Logf("exposure level %s", m[1])
	if err != nil {
		t.Fatalf("exposure level %s is above 3.0 (err %v):\n%s", m[1], err, stdout)
	}
}

func TestSystemdUnitContents(t *testing.T) {
	u := unitSettings(t, string(readFile(t, unitFile)))
	unit, svc, inst := u["Unit"], u["Service"], u["Install"]
	if unit == nil || svc == nil || inst == nil {
		t.Fatalf("want [Unit], [Service] and [Install] sections, got %v", u)
	}
	want := []struct {
		m     map[string][]string
		key   string
		value string
	}{
		{unit, "After", "network-online.target"},
		{unit, "Wants", "network-online.target"},
		{svc, "Type", "notify"},
		{svc, "NotifyAccess", "main"},
		{svc, "WatchdogSec", "30s"},
		{svc, "Restart", "on-failure"},
		{svc, "ExecStart", "/usr/bin/weft run --config /etc/weft/weft.yaml"},
		{svc, "ExecReload", "/bin/kill -HUP $MAINPID"},
		{svc, "ExecStopPost", "/usr/bin/weft run --cleanup --config /etc/weft/weft.yaml"},
		{svc, "RuntimeDirectory", "weft"},
		{svc, "StateDirectory", "weft"},
		{svc, "User", "root"},
		{svc, "CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"},
		{svc, "NoNewPrivileges", "yes"},
		{svc, "DevicePolicy", "closed"},
		{svc, "DeviceAllow", "/dev/net/tun rw"},
		{svc, "ProtectSystem", "strict"},
		{svc, "ProtectHome", "yes"},
		{svc, "RestrictAddressFamilies", "AF_INET AF_INET6 AF_NETLINK AF_UNIX"},
		{svc, "LockPersonality", "yes"},
		{svc, "MemoryDenyWriteExecute", "yes"},
		{svc, "ProtectKernelModules", "yes"},
		{svc, "ProtectKernelTunables", "yes"},
		{inst, "WantedBy", "multi-user.target"},
	}
	for _, w := range want {
		if !slices.Contains(w.m[w.key], w.value) {
			t.Errorf("%s: want %s=%s, have %q", unitFile, w.key, w.value, w.m[w.key])
		}
	}
	// The reload must validate the file before signalling the daemon.
	if r := svc["ExecReload"]; len(r) != 2 || !strings.Contains(r[0], "run --check") || !strings.HasPrefix(r[1], "/bin/kill") {
		t.Errorf("ExecReload: want `weft run --check` then /bin/kill -HUP, have %q", r)
	}
	for key, forbidden := range map[string]string{
		"PrivateDevices":      "yes", // hides /dev/net/tun
		"PrivateNetwork":      "yes", // the daemon's whole job is the host network
		"PrivateUsers":        "yes", // capabilities would not apply to the host namespace
		"AmbientCapabilities": "",    // root needs none; see nonroot.conf for the non-root case
	} {
		for _, v := range svc[key] {
			if forbidden == "" || v == forbidden {
				t.Errorf("%s: %s=%s must not be set", unitFile, key, v)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Example configuration

var configKeys = []string{"name", "network", "subnet", "subnetLen", "subnetMin", "subnetMax", "publicIp",
	"iface", "port", "encap", "vni", "vtepMac", "gossipPort", "join", "tun", "mtu", "metricsAddr", "socket",
	"logLevel", "logFormat", "directRouting", "datapath", "stateDir", "subnetFile", "flannelCompat", "gossipKeyFile", "encrypt", "peers",
	"pprofAddr"}

func TestConfigExample(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal(readFile(t, configFile), &root); err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	var cfg map[string]any
	if err := root.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	var have []string
	for k := range cfg {
		have = append(have, k)
	}
	want := slices.Clone(configKeys)
	sort.Strings(have)
	sort.Strings(want)
	if !slices.Equal(have, want) {
		t.Errorf("%s keys:\n have %v\n want %v", configFile, have, want)
	}
	// Every key is explained: a comment right above it.
	doc := root.Content[0]
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if k := doc.Content[i]; strings.TrimSpace(k.HeadComment) == "" {
			t.Errorf("%s:%d: key %s has no comment above it", configFile, k.Line, k.Value)
		}
	}

	str := func(k string) string { s, _ := cfg[k].(string); return s }
	if e := str("encap"); !slices.Contains([]string{"udp", "vxlan", "none"}, e) {
		t.Errorf("encap %q", e)
	}
	// The unit makes everything read-only except these two directories.
	for _, k := range []string{"stateDir", "subnetFile", "socket"} {
		if p := str(k); p != "/var/lib/weft" && !strings.HasPrefix(p, "/var/lib/weft/") && !strings.HasPrefix(p, "/run/weft/") {
			t.Errorf("%s: %s = %q is not below /run/weft or /var/lib/weft, where the unit lets weft write", configFile, k, p)
		}
	}
	if str("stateDir") != "/var/lib/weft" || str("socket") != "/run/weft/weft.sock" || str("subnetFile") != "/run/weft/subnet.env" {
		t.Errorf("stateDir, socket, subnetFile should be the defaults the unit's StateDirectory= and RuntimeDirectory= provide")
	}
	if _, port, err := net.SplitHostPort(str("metricsAddr")); err != nil || port != "9586" {
		t.Errorf("metricsAddr %q: want port 9586 (the scrape example's)", str("metricsAddr"))
	}
	// The key every host of a cluster shares, installed by the operator
	// (the package makes none): without it, the unit's --check fails.
	if k := str("gossipKeyFile"); k != "/etc/weft/gossip.key" {
		t.Errorf("gossipKeyFile %q: want /etc/weft/gossip.key (a gossip key is required)", k)
	}
	if _, ok := cfg["insecureGossip"]; ok {
		t.Errorf("the example sets insecureGossip: the packaged configuration must require a gossip key")
	}
	if a := str("pprofAddr"); a != "" {
		t.Errorf("pprofAddr %q: want off by default", a)
	}
	if p, ok := cfg["peers"].([]any); !ok || len(p) != 0 {
		t.Errorf("peers: want an empty list, have %#v", cfg["peers"])
	}
	if j, ok := cfg["join"].([]any); !ok || len(j) != 0 {
		t.Errorf("join: want an empty list, have %#v", cfg["join"])
	}
	// The commented peers example uses exactly the documented peer fields.
	m := regexp.MustCompile(`(?m)^#\s+-?\s*(\w+):`).FindAllStringSubmatch(string(readFile(t, configFile)), -1)
	var peerFields []string
	for _, f := range m {
		peerFields = append(peerFields, f[1])
	}
	for _, f := range []string{"name", "subnet", "ip", "mac"} {
		if !slices.Contains(peerFields, f) {
			t.Errorf("the commented peers example lacks %q", f)
		}
	}
}

// With WEFT_BIN pointing at a built weft, the daemon itself must accept the
// example and reject a broken copy with exit status 2.
func TestConfigExampleCheck(t *testing.T) {
	bin := os.Getenv("WEFT_BIN")
	if bin == "" {
		t.Skip("set WEFT_BIN=/path/to/weft to run `weft run --check` on the example config")
	}
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(repoRoot(t), bin)
	}
	var ee *exec.ExitError
	// As shipped, on a host without the cluster's key: exit 2, saying how
	// to install one (the unit's ExecStartPre shows it).
	if _, err := os.Stat("/etc/weft/gossip.key"); errors.Is(err, os.ErrNotExist) {
		stdout, stderr, err := run(t, "", nil, bin, "run", "--check", "--config", configFile)
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr, "/etc/weft/gossip.key") || !strings.Contains(stderr, "weft keygen") {
			t.Errorf("weft run --check --config %s without /etc/weft/gossip.key: want exit status 2 naming the key file and weft keygen, got %v\n%s%s", configFile, err, stdout, stderr)
		}
	}
	// With the key installed (here: a copy naming a key of ours): valid.
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(key, []byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withKey := bytes.Replace(readFile(t, configFile), []byte("\ngossipKeyFile: /etc/weft/gossip.key\n"), []byte("\ngossipKeyFile: "+key+"\n"), 1)
	good := filepath.Join(dir, "weft.yaml")
	if err := os.WriteFile(good, withKey, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := run(t, "", nil, bin, "run", "--check", "--config", good)
	if err != nil {
		t.Fatalf("weft run --check --config %s (with a gossip key): %v\n%s%s", configFile, err, stdout, stderr)
	}
	bad := filepath.Join(dir, "bad.yaml")
	b := bytes.Replace(withKey, []byte("\nencap: udp\n"), []byte("\nencap: carrier-pigeon\n"), 1)
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = run(t, "", nil, bin, "run", "--check", "--config", bad)
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("weft run --check on a config with encap: carrier-pigeon: want exit status 2, got %v\n%s%s", err, stdout, stderr)
	}
}

// ---------------------------------------------------------------------------
// Prometheus scrape example

func TestPrometheusConfig(t *testing.T) {
	promtool := needTool(t, "promtool", aptPrometheus)
	stdout, stderr, err := run(t, "", nil, promtool, "check", "config", promConfigFile)
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s%s", err, stdout, stderr)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			ScrapeInterval string `yaml:"scrape_interval"`
			MetricsPath    string `yaml:"metrics_path"`
			StaticConfigs  []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(readFile(t, promConfigFile), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 1 {
		t.Fatalf("want one scrape config, have %d", len(cfg.ScrapeConfigs))
	}
	sc := cfg.ScrapeConfigs[0]
	if sc.JobName != "weft" || sc.ScrapeInterval != "15s" || sc.MetricsPath != "/metrics" {
		t.Errorf("scrape config: job %q interval %q path %q; want weft, 15s, /metrics", sc.JobName, sc.ScrapeInterval, sc.MetricsPath)
	}
	n := 0
	for _, s := range sc.StaticConfigs {
		for _, tg := range s.Targets {
			n++
			if !strings.HasSuffix(tg, ":9586") {
				t.Errorf("target %q: want port 9586", tg)
			}
		}
	}
	if n == 0 {
		t.Error("no static targets")
	}
	if !strings.Contains(string(readFile(t, promConfigFile)), "file_sd_configs") {
		t.Error("the comment on file-based service discovery is missing")
	}
}

// ---------------------------------------------------------------------------
// Grafana dashboard

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	Datasource   *dsRef `json:"datasource"`
	Expr         string `json:"expr"`
	RefID        string `json:"refId"`
	LegendFormat string `json:"legendFormat"`
}

type panel struct {
	ID          int                       `json:"id"`
	Type        string                    `json:"type"`
	Title       string                    `json:"title"`
	Datasource  *dsRef                    `json:"datasource"`
	GridPos     *struct{ H, W, X, Y int } `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's panels
}

type variable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Query      json.RawMessage `json:"query"`
	Datasource *dsRef          `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   *string         `json:"allValue"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string `json:"name"`
			Datasource *dsRef `json:"datasource"`
			Expr       string `json:"expr"`
			BuiltIn    int    `json:"builtIn"`
		} `json:"list"`
	} `json:"annotations"`
}

// A PromQL expression of the dashboard and where it comes from.
type query struct {
	where string
	expr  string
}

func loadDashboard(t *testing.T) (dashboard, []panel, []query) {
	t.Helper()
	raw := readFile(t, dashboardFile)
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: invalid JSON: %v", dashboardFile, err)
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatalf("%s: invalid JSON: %v", dashboardFile, err)
	}
	var panels []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			panels = append(panels, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	var qs []query
	for _, p := range panels {
		for _, tg := range p.Targets {
			qs = append(qs, query{fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			qs = append(qs, query{fmt.Sprintf("annotation %q", a.Name), a.Expr})
		}
	}
	return d, panels, qs
}

var wantDS = dsRef{Type: "prometheus", UID: "${datasource}"}

// Grafana unit ids the dashboard may use (a typo shows raw numbers).
var grafanaUnits = []string{"none", "short", "bps", "Bps", "pps", "ops", "reqps", "bytes", "percentunit",
	"percent", "s", "ms", "dateTimeFromNow", "bool", "bool_yes_no", "bool_on_off"}

func TestDashboardStructure(t *testing.T) {
	d, panels, qs := loadDashboard(t)
	if d.SchemaVersion < 38 {
		t.Errorf("schemaVersion %d < 38 (Grafana 10)", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: both needed for provisioning", d.UID, d.Title)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v := vars["datasource"]; v.Type != "datasource" || string(v.Query) != `"prometheus"` {
		t.Errorf("variable datasource: want type datasource, query prometheus; have %+v", v)
	}
	v := vars["instance"]
	var q string
	if json.Unmarshal(v.Query, &q) != nil {
		var obj struct{ Query string }
		_ = json.Unmarshal(v.Query, &obj)
		q = obj.Query
	}
	if v.Type != "query" || q != "label_values(weft_build_info, instance)" || !v.Multi || !v.IncludeAll {
		t.Errorf("variable instance: want a multi, include-all query label_values(weft_build_info, instance); have %+v (query %q)", v, q)
	}
	if v.Datasource == nil || *v.Datasource != wantDS {
		t.Errorf("variable instance: datasource %v, want %v", v.Datasource, wantDS)
	}
	// "All" must expand to the weft instances: with allValue ".*" the
	// process_* and go_* panels would show every job's processes.
	if v.AllValue != nil && *v.AllValue != "" {
		t.Errorf("variable instance: allValue %q; leave it unset so All means the weft instances", *v.AllValue)
	}

	ids := map[int]bool{}
	nData := 0
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d %q: no gridPos", p.ID, p.Title)
		}
		if p.Type == "row" { // a row is a heading: no data, no unit
			if len(p.Targets) > 0 {
				t.Errorf("row %q has targets", p.Title)
			}
			continue
		}
		nData++
		if !slices.Contains([]string{"timeseries", "stat", "table"}, p.Type) {
			t.Errorf("panel %d %q: type %q", p.ID, p.Title, p.Type)
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if u := p.FieldConfig.Defaults.Unit; u == "" {
			t.Errorf("panel %d %q: no unit (fieldConfig.defaults.unit)", p.ID, p.Title)
		} else if !slices.Contains(grafanaUnits, u) {
			t.Errorf("panel %d %q: unit %q is not one this test knows as a Grafana unit id", p.ID, p.Title, u)
		}
		if p.Datasource == nil || *p.Datasource != wantDS {
			t.Errorf("panel %d %q: datasource %v, want %v", p.ID, p.Title, p.Datasource, wantDS)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q: no targets", p.ID, p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || *tg.Datasource != wantDS {
				t.Errorf("panel %d %q target %s: datasource %v, want %v", p.ID, p.Title, tg.RefID, tg.Datasource, wantDS)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %d %q target %s: empty expr", p.ID, p.Title, tg.RefID)
			}
		}
		// Byte counters are shown in bits per second.
		for _, tg := range p.Targets {
			if strings.Contains(tg.Expr, "_bytes_total") {
				if p.FieldConfig.Defaults.Unit != "bps" || !strings.Contains(tg.Expr, "* 8") {
					t.Errorf("panel %d %q: byte counters must be shown as rate(...)*8 with unit bps", p.ID, p.Title)
				}
			}
		}
	}
	if nData < 12 {
		t.Errorf("only %d data panels", nData)
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 0 && (a.Datasource == nil || *a.Datasource != wantDS) {
			t.Errorf("annotation %q: datasource %v, want %v", a.Name, a.Datasource, wantDS)
		}
	}

	// Every weft_ metric appears somewhere, and so do the process panels.
	used := map[string]bool{}
	for _, q := range qs {
		for _, m := range metricNames(q.expr) {
			used[baseMetric(m)] = true
		}
	}
	for name := range knownMetrics {
		if strings.HasPrefix(name, "weft_") && !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

var (
	metricRe   = regexp.MustCompile(`\b((?:weft|process|go)_[A-Za-z0-9_:]*)(\s*\{([^}]*)\})?`)
	matcherRe  = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)
	rangeRe    = regexp.MustCompile(`\[([^\]]*)\]`)
	groupingRe = regexp.MustCompile(`\b(by|without)\s*\(([^)]*)\)`)
	rateFuncRe = regexp.MustCompile(`\b(rate|irate|increase)\s*\(`)
)

func metricNames(expr string) []string {
	var out []string
	for _, m := range metricRe.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1])
	}
	return out
}

// baseMetric maps a histogram's or summary's series name to its family.
func baseMetric(name string) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		if info, ok := knownMetrics[base]; ok {
			if info.Type == "histogram" || (info.Type == "summary" && suf != "_bucket") {
				return base
			}
		}
	}
	return name
}

// splitMatchers splits the inside of {...} at commas outside quotes.
func splitMatchers(s string) []string {
	var out []string
	var cur strings.Builder
	inQ, esc := false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case r == '\\' && inQ:
			esc = true
		case r == '"':
			inQ = !inQ
		case r == ',' && !inQ:
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	if strings.TrimSpace(cur.String()) != "" {
		out = append(out, cur.String())
	}
	return out
}

// allowedLabels returns the labels a series of this name may carry.
func allowedLabels(name string) map[string][]string {
	info := knownMetrics[baseMetric(name)]
	l := map[string][]string{}
	for k, v := range info.Labels {
		l[k] = v
	}
	for _, k := range targetLabels {
		l[k] = nil
	}
	if strings.HasSuffix(name, "_bucket") {
		l["le"] = nil
	}
	return l
}

// callArg returns the text inside the parentheses that open at expr[open].
func callArg(expr string, open int) string {
	depth := 0
	for i := open; i < len(expr); i++ {
		switch expr[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return expr[open+1 : i]
			}
		}
	}
	return expr[open+1:]
}

// checkQuery applies the dashboard's rules to one expression.
func checkQuery(q query) []string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, q.where+": "+fmt.Sprintf(f, a...)) }

	// Every range is $__rate_interval, so rate() always spans at least four
	// scrapes whatever the zoom.
	for _, m := range rangeRe.FindAllStringSubmatch(q.expr, -1) {
		if m[1] != "$__rate_interval" {
			bad("range [%s]: use [$__rate_interval]", m[1])
		}
	}
	if strings.Contains(q.expr, "$__interval") || strings.Contains(q.expr, "$__range") {
		bad("use $__rate_interval, not $__interval or $__range")
	}

	sels := metricRe.FindAllStringSubmatch(q.expr, -1)
	if len(sels) == 0 {
		bad("no weft metric in %q", q.expr)
	}
	exprLabels := map[string]bool{}
	for _, s := range sels {
		name, hasBraces, inside := s[1], s[2] != "", s[3]
		base := baseMetric(name)
		info, ok := knownMetrics[base]
		if !ok {
			bad("unknown metric %s", name)
			continue
		}
		if base != name && info.Type != "histogram" && info.Type != "summary" {
			bad("%s: suffix on a %s", name, info.Type)
		}
		if base == name && (info.Type == "histogram" || info.Type == "summary") {
			bad("%s is a %s: use %s_bucket, _sum or _count", name, info.Type, name)
		}
		allowed := allowedLabels(name)
		for l := range allowed {
			exprLabels[l] = true
		}
		if !hasBraces || !strings.Contains(inside, `instance=~"$instance"`) {
			bad("selector %s has no instance=~\"$instance\"", strings.TrimSpace(s[0]))
		}
		for _, m := range splitMatchers(inside) {
			mm := matcherRe.FindStringSubmatch(m)
			if mm == nil {
				bad("%s: cannot read matcher %q", name, m)
				continue
			}
			label, op, value := mm[1], mm[2], mm[3]
			values, ok := allowed[label]
			if !ok {
				bad("%s has no label %q", name, label)
				continue
			}
			if values != nil && (op == "=" || op == "!=") && !slices.Contains(values, value) {
				bad("%s{%s%s%q}: %q is not one of %v", name, label, op, value, value, values)
			}
		}
	}
	for _, g := range groupingRe.FindAllStringSubmatch(q.expr, -1) {
		for _, l := range strings.Split(g[2], ",") {
			if l = strings.TrimSpace(l); l != "" && !exprLabels[l] {
				bad("%s (%s): no metric in this expression has label %q", g[1], g[2], l)
			}
		}
	}
	// rate(), irate() and increase() only over counters (and histogram or
	// summary _sum/_count/_bucket series, which are counters too).
	for _, loc := range rateFuncRe.FindAllStringIndex(q.expr, -1) {
		arg := callArg(q.expr, loc[1]-1)
		for _, name := range metricNames(arg) {
			info, ok := knownMetrics[baseMetric(name)]
			if ok && info.Type != "counter" && baseMetric(name) == name {
				bad("%s over %s, a %s", strings.TrimSpace(q.expr[loc[0]:loc[1]-1]), name, info.Type)
			}
		}
	}
	return errs
}

func TestDashboardQueries(t *testing.T) {
	_, _, qs := loadDashboard(t)
	if len(qs) == 0 {
		t.Fatal("no queries")
	}
	for _, q := range qs {
		for _, e := range checkQuery(q) {
			t.Error(e)
		}
	}
}

// The checker must catch what it is there to catch.
func TestDashboardQueryChecker(t *testing.T) {
	I := `instance=~"$instance"`
	for _, c := range []struct{ expr, want string }{
		{`rate(weft_tx_bytes_total{` + I + `}[5m])`, "use [$__rate_interval]"},
		{`rate(weft_tx_byte_total{` + I + `}[$__rate_interval])`, "unknown metric"},
		{`weft_peers{state="live", ` + I + `}`, "is not one of"},
		{`weft_peers{peer="a", ` + I + `}`, "has no label"},
		{`weft_ready`, "no instance"},
		{`rate(weft_peers{` + I + `}[$__rate_interval])`, "a gauge"},
		{`sum by (reason) (weft_peers{` + I + `})`, `no metric in this expression has label "reason"`},
		{`weft_batch_size_packets{` + I + `}`, "is a histogram"},
		{`histogram_quantile(0.9, sum by (le) (rate(weft_batch_size_packets_bucket{` + I + `}[$__rate_interval])))`, ""},
		{`rate(process_cpu_seconds_total{` + I + `}[$__rate_interval])`, ""},
	} {
		errs := strings.Join(checkQuery(query{"test", c.expr}), "\n")
		if c.want == "" && errs != "" {
			t.Errorf("%s: unexpected complaint: %s", c.expr, errs)
		}
		if c.want != "" && !strings.Contains(errs, c.want) {
			t.Errorf("%s: want a complaint containing %q, got %q", c.expr, c.want, errs)
		}
	}
}

// promtool has no command that parses a bare expression, but `check rules`
// parses every rule's expr: the queries go into a rules file as recording
// rules, with Grafana's variables replaced by values PromQL accepts.
func TestDashboardQueriesParse(t *testing.T) {
	promtool := needTool(t, "promtool", aptPrometheus)
	_, _, qs := loadDashboard(t)
	repl := strings.NewReplacer("$__rate_interval", "5m", "${instance}", ".*", "$instance", ".*")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	var index strings.Builder
	for i, q := range qs {
		name := fmt.Sprintf("weft_dashboard:query_%03d", i)
		rules = append(rules, rule{name, repl.Replace(q.expr)})
		fmt.Fprintf(&index, "%s = %s\n", name, q.where)
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "weft-dashboard", "rules": rules}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := run(t, "", nil, promtool, "check", "rules", path)
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s%s\nrules:\n%s\nwhich query is which:\n%s", err, stdout, stderr, b, index.String())
	}
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(rules)); !strings.Contains(stdout, want) {
		t.Fatalf("promtool check rules: want %q in\n%s%s", want, stdout, stderr)
	}
	// And promtool does reject a broken one.
	if err := os.WriteFile(path, []byte("groups:\n- name: x\n  rules:\n  - record: x:y\n    expr: sum by (a (b)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := run(t, "", nil, promtool, "check", "rules", path); err == nil {
		t.Fatal("promtool check rules accepted a broken expression")
	}
}

// ---------------------------------------------------------------------------
// Packaging

// Files the Debian package must hold (directories aside).
var debFiles = []string{
	"/usr/bin/weft",
	"/opt/cni/bin/weft",
	"/usr/lib/cni/weft",
	"/lib/systemd/system/weft.service",
	"/etc/weft/weft.yaml",
	"/usr/share/weft/grafana/weft-dashboard.json",
	"/usr/share/doc/weft/README.md",
	"/usr/share/doc/weft/examples/prometheus.yml",
	"/usr/share/doc/weft/examples/weft.yaml",
	"/usr/share/doc/weft/examples/weft.service.d/nonroot.conf",
	"/usr/share/doc/weft/examples/60-weft.conf",
}

func TestNfpmConfig(t *testing.T) {
	var cfg struct {
		Name          string `yaml:"name"`
		Arch          string `yaml:"arch"`
		Version       string `yaml:"version"`
		VersionSchema string `yaml:"version_schema"`
		Maintainer    string `yaml:"maintainer"`
		Contents      []struct {
			Src  string `yaml:"src"`
			Dst  string `yaml:"dst"`
			Type string `yaml:"type"`
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	}
	if err := yaml.Unmarshal(readFile(t, nfpmFile), &cfg); err != nil {
		t.Fatalf("%s: %v", nfpmFile, err)
	}
	if cfg.Name != "weft" || cfg.Version != "${WEFT_VERSION}" || cfg.Arch != "${WEFT_ARCH}" || cfg.VersionSchema != "none" {
		t.Errorf("name %q version %q arch %q version_schema %q", cfg.Name, cfg.Version, cfg.Arch, cfg.VersionSchema)
	}
	root := repoRoot(t)
	var dsts []string
	for _, c := range cfg.Contents {
		if c.Type == "dir" {
			continue
		}
		dsts = append(dsts, c.Dst)
		if c.Type == "symlink" {
			// The CNI plugin: a symlink to the installed binary.
			if c.Src != "/usr/bin/weft" {
				t.Errorf("%s: symlink to %s, want /usr/bin/weft", c.Dst, c.Src)
			}
			continue
		}
		if c.Src != "./bin/weft" { // built by make build
			if _, err := os.Stat(filepath.Join(root, c.Src)); err != nil {
				t.Errorf("%s: src %s: %v", nfpmFile, c.Src, err)
			}
		}
		if c.Dst == "/etc/weft/weft.yaml" && c.Type != "config|noreplace" {
			t.Errorf("/etc/weft/weft.yaml: type %q, want config|noreplace", c.Type)
		}
		if c.Dst != "/etc/weft/weft.yaml" && c.Type != "" {
			t.Errorf("%s: type %q", c.Dst, c.Type)
		}
	}
	sort.Strings(dsts)
	want := slices.Clone(debFiles)
	sort.Strings(want)
	if !slices.Equal(dsts, want) {
		t.Errorf("%s contents:\n have %v\n want %v", nfpmFile, dsts, want)
	}
	for _, s := range []string{"postinstall", "preremove", "postremove"} {
		p := cfg.Scripts[s]
		st, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("script %s: %v", s, err)
		} else if st.Mode()&0o111 == 0 {
			t.Errorf("script %s (%s) is not executable", s, p)
		}
	}
}

// The maintainer scripts parse, exit 0, and never start, restart or enable
// the service. A fake systemctl first in PATH records what they ask for; on
// a machine without systemd running they must not call it at all.
func TestMaintainerScripts(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	fake := "#!/bin/sh\necho \"$*\" >> " + log + "\n"
	if err := os.WriteFile(filepath.Join(dir, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + dir + ":" + os.Getenv("PATH")}
	_, systemdRunning := os.Stat("/run/systemd/system")
	for _, c := range []struct {
		script string
		args   []string
		allow  []string
	}{
		{"debian/postinst.sh", []string{"configure", ""}, []string{"daemon-reload"}},
		{"debian/postinst.sh", []string{"configure", "0.1.0"}, []string{"daemon-reload"}},
		{"debian/prerm.sh", []string{"upgrade", "0.2.0"}, nil},
		{"debian/prerm.sh", []string{"remove"}, []string{"stop weft.service", "disable weft.service"}},
		{"debian/postrm.sh", []string{"upgrade", "0.2.0"}, nil},
		{"debian/postrm.sh", []string{"remove"}, []string{"daemon-reload"}},
		// postrm purge deletes /var/lib/weft: not run here.
	} {
		// No script makes a gossip key: one made per host would keep the
		// hosts apart silently; the operator installs the cluster's.
		for _, line := range strings.Split(string(readFile(t, c.script)), "\n") {
			if l := strings.TrimSpace(line); !strings.HasPrefix(l, "#") && strings.Contains(l, "keygen") {
				t.Errorf("%s makes a gossip key: %q", c.script, l)
			}
		}
		os.Remove(log)
		if _, stderr, err := run(t, "", nil, "sh", "-n", c.script); err != nil {
			t.Fatalf("sh -n %s: %v\n%s", c.script, err, stderr)
		}
		stdout, stderr, err := run(t, "", env, "sh", append([]string{c.script}, c.args...)...)
		if err != nil {
			t.Errorf("%s %v: %v\n%s%s", c.script, c.args, err, stdout, stderr)
		}
		calls, _ := os.ReadFile(log)
		for _, call := range strings.Split(strings.TrimSpace(string(calls)), "\n") {
			if call == "" {
				continue
			}
			if systemdRunning != nil {
				t.Errorf("%s %v called systemctl %s although systemd is not running", c.script, c.args, call)
			} else if !slices.Contains(c.allow, call) {
				t.Errorf("%s %v called systemctl %s; allowed: %q", c.script, c.args, call, c.allow)
			}
		}
	}
}

// makeTmp writes a Makefile that includes deploy.mk the way the top-level
// Makefile will, with a stand-in build target, and returns its path.
func makeTmp(t *testing.T, dir, body string) string {
	t.Helper()
	mk, err := filepath.Abs(makeFragment)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "Makefile")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(body, "@DEPLOY_MK@", mk)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMakeFragment(t *testing.T) {
	mk := needTool(t, "make", aptMake)
	src := string(readFile(t, makeFragment))
	if m := regexp.MustCompile(`(?m)^(all|test|build|demo|bench)\s*:`).FindAllString(src, -1); m != nil {
		t.Errorf("%s must not define %v", makeFragment, m)
	}
	root := repoRoot(t)

	t.Run("default-goal-unchanged", func(t *testing.T) {
		for _, body := range []string{
			"include @DEPLOY_MK@\nall: ; @echo ALL\nbuild: ; @true\n",
			"all: ; @echo ALL\nbuild: ; @true\ninclude @DEPLOY_MK@\n",
		} {
			mf := makeTmp(t, t.TempDir(), body)
			out, stderr, err := run(t, root, nil, mk, "-s", "-f", mf)
			if err != nil || strings.TrimSpace(out) != "ALL" {
				t.Errorf("Makefile\n%s\nmake with no goal: want ALL, got %q %v %s", body, out, err, stderr)
			}
		}
	})

	t.Run("deb-version", func(t *testing.T) {
		mf := makeTmp(t, t.TempDir(), "build: ; @true\ninclude @DEPLOY_MK@\n")
		for in, want := range map[string]string{
			"v0.1.0":                  "0.1.0",
			"0.1.0":                   "0.1.0",
			"v1.2.3-4-gdeadbee":       "1.2.3+4.gdeadbee",
			"v1.2.3-4-gdeadbee-dirty": "1.2.3+4.gdeadbee+dirty",
			"v1.2.3-dirty":            "1.2.3+dirty",
			"v2.0.0-rc.1":             "2.0.0~rc.1",
			"v2.0.0-rc.1-2-gabc1234":  "2.0.0~rc.1+2.gabc1234",
			"dev":                     "0.0.0~dev",
			"1a2b3c4":                 "0.0.0~1a2b3c4",
			"1a2b3c4-dirty":           "0.0.0~1a2b3c4+dirty",
			"feature/x_y":             "0.0.0~feature.x.y",
		} {
			out, stderr, err := run(t, root, nil, mk, "-s", "-f", mf, "deb-version", "VERSION="+in)
			if err != nil || strings.TrimSpace(out) != want {
				t.Errorf("VERSION=%s: deb version %q, want %q (%v %s)", in, strings.TrimSpace(out), want, err, stderr)
			}
		}
		// dpkg agrees that they are versions and that they sort as meant.
		if dpkg, err := exec.LookPath("dpkg"); err == nil {
			order := []string{"0.0.0~dev", "1.2.3", "1.2.3+4.gdeadbee", "1.2.3+4.gdeadbee+dirty", "2.0.0~rc.1", "2.0.0~rc.1+2.gabc1234", "2.0.0"}
			for i := 0; i+1 < len(order); i++ {
				if _, stderr, err := run(t, "", nil, dpkg, "--compare-versions", order[i], "lt", order[i+1]); err != nil {
					t.Errorf("dpkg: %s is not < %s (%v %s)", order[i], order[i+1], err, stderr)
				}
			}
		}
	})

	t.Run("install", func(t *testing.T) {
		dir := t.TempDir()
		mf := makeTmp(t, dir, "VERSION := v1.2.3\nbuild: ; @true\ninclude @DEPLOY_MK@\n")
		stub := filepath.Join(dir, "weft-stub")
		copyFile(t, "/bin/true", stub, 0o755)
		dest := filepath.Join(dir, "root")
		install := func() {
			t.Helper()
			out, stderr, err := run(t, root, nil, mk, "-f", mf, "install", "DESTDIR="+dest, "PREFIX=/usr/local", "WEFT_BIN="+stub)
			if err != nil {
				t.Fatalf("make install: %v\n%s%s", err, out, stderr)
			}
		}
		install()
		for path, mode := range map[string]os.FileMode{
			"/usr/local/bin/weft":                                            0o755,
			"/usr/local/lib/systemd/system/weft.service":                     0o644,
			"/etc/weft/weft.yaml":                                            0o644,
			"/usr/local/share/weft/grafana/weft-dashboard.json":              0o644,
			"/usr/local/share/doc/weft/README.md":                            0o644,
			"/usr/local/share/doc/weft/examples/prometheus.yml":              0o644,
			"/usr/local/share/doc/weft/examples/weft.service.d/nonroot.conf": 0o644,
		} {
			st, err := os.Stat(filepath.Join(dest, path))
			if err != nil {
				t.Errorf("make install: %v", err)
			} else if st.Mode().Perm() != mode {
				t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
			}
		}
		for _, p := range []string{"/opt/cni/bin/weft", "/usr/lib/cni/weft"} {
			if target, err := os.Readlink(filepath.Join(dest, p)); err != nil || target != "/usr/local/bin/weft" {
				t.Errorf("make install: %s -> %q (%v), want a symlink to /usr/local/bin/weft", p, target, err)
			}
		}
		unitPath := filepath.Join(dest, "/usr/local/lib/systemd/system/weft.service")
		unit := string(readFile(t, unitPath))
		if strings.Contains(unit, "/usr/bin/weft") {
			t.Errorf("installed unit still names /usr/bin/weft")
		}
		u := unitSettings(t, unit)
		if got := u["Service"]["ExecStart"]; !slices.Equal(got, []string{"/usr/local/bin/weft run --config /etc/weft/weft.yaml"}) {
			t.Errorf("installed unit ExecStart %q", got)
		}
		if got := u["Service"]["ExecStopPost"]; !slices.Equal(got, []string{"/usr/local/bin/weft run --cleanup --config /etc/weft/weft.yaml"}) {
			t.Errorf("installed unit ExecStopPost %q", got)
		}
		// The rewritten unit is still valid (binary path pointed into DESTDIR).
		vdir := t.TempDir()
		vunit := strings.ReplaceAll(unit, "/usr/local/bin/weft", filepath.Join(dest, "usr/local/bin/weft"))
		if err := os.WriteFile(filepath.Join(vdir, "weft.service"), []byte(vunit), 0o644); err != nil {
			t.Fatal(err)
		}
		verifyUnit(t, filepath.Join(vdir, "weft.service"))

		// A second install keeps an edited config.
		cfg := filepath.Join(dest, "etc/weft/weft.yaml")
		if err := os.WriteFile(cfg, []byte("# edited\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		install()
		if b := readFile(t, cfg); string(b) != "# edited\n" {
			t.Errorf("make install overwrote an existing /etc/weft/weft.yaml")
		}

		out, stderr, err := run(t, root, nil, mk, "-f", mf, "uninstall", "DESTDIR="+dest, "PREFIX=/usr/local")
		if err != nil {
			t.Fatalf("make uninstall: %v\n%s%s", err, out, stderr)
		}
		for _, p := range []string{"usr/local/bin/weft", "usr/local/lib/systemd/system/weft.service", "usr/local/share/weft", "usr/local/share/doc/weft",
			"opt/cni/bin/weft", "usr/lib/cni/weft"} {
			if _, err := os.Lstat(filepath.Join(dest, p)); err == nil {
				t.Errorf("make uninstall left %s", p)
			}
		}
		if _, err := os.Stat(cfg); err != nil {
			t.Errorf("make uninstall removed the config: %v", err)
		}
		// A CNI plugin "weft" that is not our symlink stays.
		foreign := filepath.Join(dest, "usr/lib/cni/weft")
		if err := os.WriteFile(foreign, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := run(t, root, nil, mk, "-f", mf, "uninstall", "DESTDIR="+dest, "PREFIX=/usr/local"); err != nil {
			t.Fatalf("make uninstall: %v\n%s%s", err, out, stderr)
		}
		if _, err := os.Stat(foreign); err != nil {
			t.Errorf("make uninstall removed a CNI plugin weft that was not its symlink: %v", err)
		}
	})

	t.Run("install-without-binary", func(t *testing.T) {
		dir := t.TempDir()
		mf := makeTmp(t, dir, "build: ; @true\ninclude @DEPLOY_MK@\n")
		_, stderr, err := run(t, root, nil, mk, "-f", mf, "install", "DESTDIR="+filepath.Join(dir, "root"), "WEFT_BIN="+filepath.Join(dir, "nope"))
		if err == nil || !strings.Contains(stderr, "make build") {
			t.Errorf("make install without a binary: want an error naming 'make build', got %v %s", err, stderr)
		}
	})
}

// TestDebPackage checks a built package: WEFT_DEB=dist/weft_<v>_amd64.deb.
func TestDebPackage(t *testing.T) {
	deb := os.Getenv("WEFT_DEB")
	if deb == "" {
		t.Skip("set WEFT_DEB=path/to/weft_<version>_<arch>.deb (make deb) to check the package")
	}
	if !filepath.IsAbs(deb) {
		if _, err := os.Stat(deb); err != nil {
			deb = filepath.Join(repoRoot(t), deb)
		}
	}
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("WEFT_DEB: %v", err)
	}
	dpkgDeb := needTool(t, "dpkg-deb", aptDpkg)

	out, stderr, err := run(t, "", nil, dpkgDeb, "-c", deb)
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, stderr)
	}
	files := map[string]string{} // path -> "mode owner"
	links := map[string]string{} // path -> symlink target
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		p := strings.TrimPrefix(strings.TrimSuffix(f[5], "/"), ".")
		files[p] = f[0] + " " + f[1]
		if len(f) == 8 && f[6] == "->" {
			links[p] = f[7]
		}
	}
	// The CNI plugin is the daemon's binary under the name runtimes look for.
	for _, p := range []string{"/opt/cni/bin/weft", "/usr/lib/cni/weft"} {
		if links[p] != "/usr/bin/weft" || !strings.HasPrefix(files[p], "l") {
			t.Errorf("%s: %q -> %q, want a symlink to /usr/bin/weft", p, files[p], links[p])
		}
	}
	for _, p := range debFiles {
		if _, ok := files[p]; !ok {
			t.Errorf("%s lacks %s; it has:\n%s", deb, p, out)
		}
	}
	for p, want := range map[string]string{
		"/usr/bin/weft":                    "-rwxr-xr-x root/root",
		"/lib/systemd/system/weft.service": "-rw-r--r-- root/root",
		"/etc/weft/weft.yaml":              "-rw-r--r-- root/root",
		"/etc/weft":                        "drwxr-xr-x root/root",
	} {
		if files[p] != want {
			t.Errorf("%s: %q, want %q", p, files[p], want)
		}
	}

	fields, stderr, err := run(t, "", nil, dpkgDeb, "-f", deb, "Package", "Version", "Architecture", "Depends", "Suggests", "Maintainer")
	if err != nil {
		t.Fatalf("dpkg-deb -f: %v\n%s", err, stderr)
	}
	for _, want := range []string{"Package: weft", "Depends: procps", "Suggests: containernetworking-plugins", "Version: ", "Architecture: "} {
		if !strings.Contains(fields, want) {
			t.Errorf("control fields lack %q:\n%s", want, fields)
		}
	}
	if m := regexp.MustCompile(`(?m)^Version: (\S+)$`).FindStringSubmatch(fields); m == nil || !strings.Contains(filepath.Base(deb), "_"+m[1]+"_") {
		t.Errorf("file name %s does not carry the package version (%v)", filepath.Base(deb), m)
	}

	ctrl := t.TempDir()
	if _, stderr, err := run(t, "", nil, dpkgDeb, "-e", deb, ctrl); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(ctrl, "conffiles")); err != nil || !strings.Contains(string(b), "/etc/weft/weft.yaml") {
		t.Errorf("conffiles: %q %v; want /etc/weft/weft.yaml", b, err)
	}
	for script, src := range map[string]string{"postinst": "debian/postinst.sh", "prerm": "debian/prerm.sh", "postrm": "debian/postrm.sh"} {
		b, err := os.ReadFile(filepath.Join(ctrl, script))
		if err != nil || !bytes.Equal(b, readFile(t, src)) {
			t.Errorf("%s in the package differs from %s (%v)", script, src, err)
		}
	}

	// Shipped files are byte-identical to the ones in deploy/.
	tree := t.TempDir()
	if _, stderr, err := run(t, "", nil, dpkgDeb, "-x", deb, tree); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, stderr)
	}
	for dst, src := range map[string]string{
		"/lib/systemd/system/weft.service":            unitFile,
		"/etc/weft/weft.yaml":                         configFile,
		"/usr/share/weft/grafana/weft-dashboard.json": dashboardFile,
	} {
		if b, err := os.ReadFile(filepath.Join(tree, dst)); err != nil || !bytes.Equal(b, readFile(t, src)) {
			t.Errorf("%s in the package differs from deploy/%s (%v)", dst, src, err)
		}
	}
}
