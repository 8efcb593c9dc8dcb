package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Host is a network namespace in a lab.
type Host struct {
	lab    *Lab
	name   string
	ns     string
	ifSeq  int
	procSq int
}

// Name returns the host's short name as given to Lab.Host.
func (h *Host) Name() string { return h.name }

// NS returns the host's network namespace name (usable with "ip -n").
func (h *Host) NS() string { return h.ns }

// Lab returns the lab the host belongs to.
func (h *Host) Lab() *Lab { return h.lab }

func (h *Host) String() string { return h.name }

func (h *Host) nextIf() string {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	n := h.ifSeq
	h.ifSeq++
	return "eth" + strconv.Itoa(n)
}

// Command returns an *exec.Cmd that runs name with args inside the host's
// namespace (via "ip netns exec"). The caller owns it: set Stdout/Stderr,
// Start/Run/Wait it. It is killed when ctx is done, and by the kernel if the
// calling process dies.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Run runs a command to completion inside the host's namespace and returns
// its combined stdout and stderr. A non-nil error names the host, the
// command, the exit status and includes the tail of the output.
func (h *Host) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := h.Command(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return out, &RunError{Host: h.name, Cmd: append([]string{name}, args...), Err: err, Output: out}
	}
	return out, nil
}

// RunError is returned by Host.Run when the command fails.
type RunError struct {
	Host   string
	Cmd    []string
	Err    error
	Output []byte
}

func (e *RunError) Error() string {
	out := bytes.TrimSpace(e.Output)
	if len(out) > 2048 {
		out = append([]byte("..."), out[len(out)-2048:]...)
	}
	msg := fmt.Sprintf("netlab: [%s] %s: %v", e.Host, strings.Join(e.Cmd, " "), e.Err)
	if len(out) > 0 {
		msg += ": " + string(out)
	}
	return msg
}

func (e *RunError) Unwrap() error { return e.Err }

// ExitCode returns the command's exit code, or -1 if it did not exit
// normally (killed by a signal, could not start, context expired).
func (e *RunError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// IP runs "ip -n <ns> args..." and returns its output.
func (h *Host) IP(ctx context.Context, args ...string) ([]byte, error) {
	out, err := runIP(ctx, append([]string{"-n", h.ns}, args...)...)
	if err != nil {
		return out, &RunError{Host: h.name, Cmd: append([]string{"ip"}, args...), Err: err, Output: out}
	}
	return out, nil
}

// SetLinkDown sets interface ifname of the host down.
func (h *Host) SetLinkDown(ifname string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	_, err := h.IP(ctx, "link", "set", "dev", ifname, "down")
	return err
}

// SetLinkUp sets interface ifname of the host up.
func (h *Host) SetLinkUp(ifname string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	_, err := h.IP(ctx, "link", "set", "dev", ifname, "up")
	return err
}

// SetMTU sets the MTU of interface ifname.
func (h *Host) SetMTU(ifname string, mtu int) error {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	_, err := h.IP(ctx, "link", "set", "dev", ifname, "mtu", strconv.Itoa(mtu))
	return err
}

// LinkExists reports whether interface ifname exists in the host.
func (h *Host) LinkExists(ctx context.Context, ifname string) (bool, error) {
	links, err := h.Links(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range links {
		if l == ifname {
			return true, nil
		}
	}
	return false, nil
}

var linkLine = regexp.MustCompile(`^\d+:\s+([^:@\s]+)[@:]`)

// Links returns the names of all interfaces in the host.
func (h *Host) Links(ctx context.Context) ([]string, error) {
	out, err := h.IP(ctx, "-o", "link", "show")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := linkLine.FindStringSubmatch(line); m != nil {
			names = append(names, m[1])
		}
	}
	return names, nil
}

// Start starts a long-running process inside the host's namespace. Its stdout
// and stderr go to a log file in the lab directory (see Proc.Logs). The
// process gets its own process group (a terminal Ctrl-C does not reach it;
// Lab.Close stops it) and is SIGKILLed by the kernel if this process dies.
func (h *Host) Start(name string, args ...string) (*Proc, error) {
	return h.startEnv(nil, name, args...)
}

// StartEnv is Start with extra environment variables ("KEY=value").
func (h *Host) StartEnv(env []string, name string, args ...string) (*Proc, error) {
	return h.startEnv(env, name, args...)
}

func (h *Host) startEnv(env []string, name string, args ...string) (*Proc, error) {
	l := h.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("netlab: lab is closed")
	}
	h.procSq++
	base := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(filepath.Base(name), "_")
	logPath := filepath.Join(l.dir, fmt.Sprintf("%s-%s-%d.log", h.name, base, h.procSq))
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.Stdout = f
	cmd.Stderr = f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("netlab: [%s] start %s: %w", h.name, name, err)
	}
	p := &Proc{
		host:    h,
		name:    name,
		args:    args,
		cmd:     cmd,
		logPath: logPath,
		done:    make(chan struct{}),
		started: time.Now(),
	}
	go func() {
		err := cmd.Wait()
		f.Close()
		p.err = err
		close(p.done)
	}()
	l.procs = append(l.procs, p)
	return p, nil
}
