package netlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// SelfCommand returns a command that runs the current executable (a test
// binary, say) with args inside the host's namespace, with the extra
// environment variables env ("KEY=value"). It is the re-exec mechanism
// HTTPGet uses, open to callers: a test binary checks its own variable in an
// init function and runs a helper (a traffic generator, a raw-socket sender)
// instead of its tests. Like Command, the process is killed when ctx is done
// and by the kernel if the calling process dies; the caller owns the
// returned *exec.Cmd.
func (h *Host) SelfCommand(ctx context.Context, env []string, args ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("netlab: cannot find own executable: %w", err)
	}
	cmd := h.Command(ctx, self, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd, nil
}
