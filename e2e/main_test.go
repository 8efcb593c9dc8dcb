// Package e2e runs the weft daemon in network namespaces built with
// internal/netlab and checks cluster formation, the overlay data path,
// graceful leave, crash recovery and CLI usage errors.
//
// Run as root: go test ./e2e -v -count=1
// Set WEFT_BIN to test a prebuilt binary instead of building ./cmd/weft,
// WEFT_E2E_RACE=1 to build it with the race detector, and NETLAB_KEEP=1 to
// keep the labs' temp directories (full daemon logs).
//
// Every daemon keeps its files in its lab's directory (internal/weftrun).
// TestMain proves it: the run fails if anything under the host's own weft
// directories (/run/weft, /var/lib/weft) was created, changed or removed.
package e2e

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/fsnap"
	"github.com/weftnet/weft/internal/weftrun"
)

// weftBin is the daemon binary every test uses, built once by TestMain.
var weftBin string

// weftRace is whether weftBin was built with the race detector, which
// costs memory and speed: bounds on those are scaled by the tests.
var weftRace bool

// raceBuild reports whether the binary at path was built with -race.
func raceBuild(path string) bool {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		// Every test skips loudly via netlab.RequireRoot; nothing to build.
		return m.Run()
	}
	before, err := fsnap.Take(weftrun.HostPaths...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: listing the host's weft files:", err)
		return 1
	}
	code := buildAndRun(m)
	after, err := fsnap.Take(weftrun.HostPaths...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: listing the host's weft files:", err)
		return 1
	}
	if diff := fsnap.Diff(before, after); len(diff) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: the run touched the host's own weft files (%s), which no test may:\n  %s\n",
			strings.Join(weftrun.HostPaths, ", "), strings.Join(diff, "\n  "))
		return 1
	}
	return code
}

// buildAndRun builds the daemon (unless WEFT_BIN names one) and runs the
// tests.
func buildAndRun(m *testing.M) int {
	if bin := os.Getenv("WEFT_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: WEFT_BIN:", err)
			return 1
		}
		weftBin = abs
		weftRace = raceBuild(weftBin)
		return m.Run()
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "weft-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	weftBin = filepath.Join(tmp, "weft")
	args := []string{"build", "-o", weftBin}
	if os.Getenv("WEFT_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/weft")
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building the daemon failed (go %s in %s): %v\n%s\n", strings.Join(args, " "), root, err, out)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: go %s (%v)\n", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	weftRace = raceBuild(weftBin)
	return m.Run()
}

// repoRoot is the module root: the parent of this file's directory.
func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate the e2e package source")
	}
	root := filepath.Dir(filepath.Dir(file))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("no go.mod in %s: %w", root, err)
	}
	return root, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	// "sudo" often drops the Go toolchain from PATH.
	if _, err := os.Stat("/usr/local/go/bin/go"); err == nil {
		return "/usr/local/go/bin/go"
	}
	return "go"
}
