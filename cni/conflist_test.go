package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

func TestConflistCommand(t *testing.T) {
	bin := t.TempDir()
	var out, errb bytes.Buffer
	if code := Command(context.Background(), []string{"conflist", "--cni-bin-dir", bin, "--name", "pods", "--data-dir", "/var/lib/cni/pods"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	// libcni (what runtimes use) accepts it.
	list, err := libcni.ConfListFromBytes(out.Bytes())
	if err != nil {
		t.Fatalf("libcni rejects the conflist: %v\n%s", err, out.String())
	}
	if list.Name != "pods" || list.CNIVersion != "1.0.0" || len(list.Plugins) != 2 ||
		list.Plugins[0].Network.Type != "weft" || list.Plugins[1].Network.Type != "portmap" ||
		!list.Plugins[1].Network.Capabilities["portMappings"] {
		t.Fatalf("conflist %s", out.String())
	}
	// The weft entry is a valid plugin config with the given settings.
	pc, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	n, cerr := ParseConf(pc.Bytes)
	if cerr != nil {
		t.Fatal(cerr)
	}
	if n.DataDir != "/var/lib/cni/pods" || n.SubnetFile != DefaultSubnetFile || n.Socket != DefaultSocket || !n.masquerades() {
		t.Errorf("weft entry %+v", n)
	}
}

func TestConflistVersion(t *testing.T) {
	bin := t.TempDir()
	portmap := filepath.Join(bin, "portmap")
	write := func(versions string) {
		t.Helper()
		script := "#!/bin/sh\necho '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[" + versions + "]}'\n"
		if err := os.WriteFile(portmap, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	version := func(args ...string) (string, int, string) {
		var out, errb bytes.Buffer
		code := Command(context.Background(), append([]string{"conflist", "--cni-bin-dir", bin}, args...), &out, &errb)
		var l Conflist
		_ = json.Unmarshal(out.Bytes(), &l)
		return l.CNIVersion, code, errb.String()
	}
	write(`"0.4.0","1.0.0"`)
	if v, _, _ := version(); v != "1.0.0" {
		t.Errorf("portmap without 1.1.0: conflist %s, want 1.0.0", v)
	}
	write(`"1.0.0","1.1.0"`)
	if v, _, _ := version(); v != "1.1.0" {
		t.Errorf("portmap with 1.1.0: conflist %s, want 1.1.0", v)
	}
	if v, _, _ := version("--cni-version", "1.0.0"); v != "1.0.0" {
		t.Errorf("--cni-version 1.0.0: %s", v)
	}
	if _, code, msg := version("--cni-version", "0.4.0"); code != 2 || !strings.Contains(msg, "--cni-version") {
		t.Errorf("--cni-version 0.4.0: exit %d %q", code, msg)
	}
	if _, code, msg := version("--subnet-file", "subnet.env"); code != 2 || !strings.Contains(msg, "--subnet-file") {
		t.Errorf("relative --subnet-file: exit %d %q", code, msg)
	}
	var errb bytes.Buffer
	if code := Command(context.Background(), nil, &bytes.Buffer{}, &errb); code != 2 || !strings.Contains(errb.String(), "conflist") {
		t.Errorf("weft cni: exit %d %q", code, errb.String())
	}
}
