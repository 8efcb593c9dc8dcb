package cni

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary doubles as the plugin: with weftCNITest set, TestMain
// runs Main (the real envelope: skel, stdout, exit code) instead of tests.
const weftCNITest = "WEFT_CNI_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(weftCNITest) != "" {
		os.Exit(Main("test"))
	}
	os.Exit(m.Run())
}

// runPlugin runs the test binary as the plugin with verb and stdin.
func runPlugin(t *testing.T, verb, stdin string) (stdout string, exit int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), weftCNITest+"=1", "CNI_COMMAND="+verb, "CNI_CONTAINERID=c1",
		"CNI_NETNS=/var/run/netns/none", "CNI_IFNAME=eth0", "CNI_PATH="+t.TempDir())
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v %s", verb, err, errb.String())
	}
	return out.String(), 0
}

// TestErrorEnvelope checks what a runtime sees: a CNI error as JSON on
// stdout, exit status 1, with the spec's codes.
func TestErrorEnvelope(t *testing.T) {
	dir := t.TempDir()
	conf := func(version, extra string) string {
		return `{"cniVersion":"` + version + `","name":"w","type":"weft","subnetFile":"` + filepath.Join(dir, "subnet.env") +
			`","dataDir":"` + filepath.Join(dir, "data") + `"` + extra + `}`
	}
	for _, c := range []struct {
		name, verb, conf string
		code             float64
		want             string
	}{
		{"no subnet file", "ADD", conf("1.0.0", ""), 11, filepath.Join(dir, "subnet.env") + " does not exist: weft is not running or not ready"},
		{"bad key", "ADD", conf("1.0.0", `,"ipMasq":"yes"`), 7, "key ipMasq"},
		{"old version", "ADD", conf("0.4.0", ""), 1, "incompatible CNI versions"},
		{"status without weft", "STATUS", conf("1.1.0", ""), 50, "not running or not ready"},
		{"check unknown", "CHECK", conf("1.0.0", ""), 999, "no state kept"},
	} {
		out, exit := runPlugin(t, c.verb, c.conf)
		var e struct {
			CNIVersion string  `json:"cniVersion"`
			Code       float64 `json:"code"`
			Msg        string  `json:"msg"`
			Details    string  `json:"details"`
		}
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Errorf("%s: stdout %q is not a CNI error: %v", c.name, out, err)
			continue
		}
		if exit != 1 || e.Code != c.code || !strings.Contains(e.Msg+" "+e.Details, c.want) {
			t.Errorf("%s: exit %d, error %+v; want exit 1, code %v, %q", c.name, exit, e, c.code, c.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused verbs created %v", entries)
	}
	// DEL of an unknown container succeeds without output.
	if out, exit := runPlugin(t, "DEL", conf("1.0.0", "")); exit != 0 || out != "" {
		t.Errorf("DEL of an unknown container: exit %d, %q", exit, out)
	}
	out, exit := runPlugin(t, "VERSION", "")
	if exit != 0 || !strings.Contains(out, `"supportedVersions":["1.0.0","1.1.0"]`) {
		t.Errorf("VERSION: exit %d %q", exit, out)
	}
}
