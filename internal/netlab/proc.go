package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotExited is returned by Proc.Wait when the process is still running
// after the timeout.
var ErrNotExited = errors.New("netlab: process has not exited")

// Proc is a long-running process started with Host.Start.
type Proc struct {
	host    *Host
	name    string
	args    []string
	cmd     *exec.Cmd
	logPath string
	started time.Time

	done chan struct{}
	err  error // result of cmd.Wait, valid after done is closed

	logMu  sync.Mutex
	cached *string
}

func (p *Proc) String() string { return fmt.Sprintf("[%s] %s", p.host.name, p.name) }

// PID returns the process id (the command itself: "ip netns exec" execs it).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Host returns the host the process runs in.
func (p *Proc) Host() *Host { return p.host }

// Args returns the command's arguments (without the command name).
func (p *Proc) Args() []string { return append([]string(nil), p.args...) }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process. It returns os.ErrProcessDone if the
// process has already exited.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits up to timeout for the process to exit. It returns ErrNotExited
// if it is still running; otherwise the result of exec.Cmd.Wait: nil for exit
// status 0, an *exec.ExitError for a non-zero status or a signal.
func (p *Proc) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return ErrNotExited
	}
}

// ExitCode returns the exit code once the process has exited, or -1 while it
// runs or if it was killed by a signal.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// ProcessState returns the exit state, or nil while the process runs.
func (p *Proc) ProcessState() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.cmd.ProcessState
}

// Kill sends SIGKILL and waits (up to 10 s) for the process to be reaped.
func (p *Proc) Kill() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if err := p.Wait(10 * time.Second); errors.Is(err, ErrNotExited) {
		return fmt.Errorf("netlab: %s (pid %d) survived SIGKILL", p, p.PID())
	}
	return nil
}

// Stop sends SIGTERM, waits up to timeout, then SIGKILLs. It returns the
// process's exit result (see Wait).
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		return p.err
	}
	_ = p.Signal(syscall.SIGTERM)
	err := p.Wait(timeout)
	if errors.Is(err, ErrNotExited) {
		if kerr := p.Kill(); kerr != nil {
			return kerr
		}
		return fmt.Errorf("netlab: %s (pid %d) ignored SIGTERM for %v and was killed", p, p.PID(), timeout)
	}
	return err
}

// LogPath returns the file that holds the process's stdout and stderr. It is
// removed by Lab.Close (unless NETLAB_KEEP is set).
func (p *Proc) LogPath() string { return p.logPath }

// Logs returns the process's combined stdout and stderr so far. It keeps
// working after Lab.Close removed the log file.
func (p *Proc) Logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if p.cached != nil {
		return *p.cached
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("<no logs: %v>", err)
	}
	return string(b)
}

func (p *Proc) cacheLogs() {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	if p.cached != nil {
		return
	}
	b, err := os.ReadFile(p.logPath)
	s := string(b)
	if err != nil {
		s = fmt.Sprintf("<no logs: %v>", err)
	}
	p.cached = &s
}

// Describe returns a one-line description: host, pid, command line, state.
func (p *Proc) Describe() string {
	state := "running"
	if p.Exited() {
		state = p.cmd.ProcessState.String()
	}
	return fmt.Sprintf("[%s] pid %d: %s %s (%s)", p.host.name, p.PID(), p.name, strings.Join(p.args, " "), state)
}
