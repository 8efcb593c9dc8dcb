package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips the test, loudly, unless it runs as root (network
// namespaces need CAP_NET_ADMIN). The message also goes to stderr so that it
// is visible without -v.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := fmt.Sprintf("SKIPPED: e2e tests need root (CAP_NET_ADMIN) to create network namespaces; %s was NOT run. Re-run as root, e.g. `sudo -E env PATH=$PATH go test ./e2e -v -count=1`.", t.Name())
	fmt.Fprintln(os.Stderr, "!!!!! "+msg)
	t.Skip(msg)
}

// RequireTools fails the test (it does not skip: CI installs them) when one
// of the named executables is not in PATH.
func RequireTools(t testing.TB, tools ...string) {
	t.Helper()
	if missing := MissingTools(tools...); len(missing) > 0 {
		t.Fatalf("required tools not found in PATH: %s (install them, e.g. `apt-get install -y iproute2 iputils-ping iperf3`)", strings.Join(missing, ", "))
	}
}

// MissingTools returns the tools that are not found in PATH.
func MissingTools(tools ...string) []string {
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	return missing
}
