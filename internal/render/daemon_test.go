package render_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
)

// waitDeadline bounds every wait on a daemon: to start, to answer, to stop.
// It bounds a hang; it does not measure speed, so it is generous enough that
// a slow CI machine cannot fail a check.
const waitDeadline = 90 * time.Second

// daemon is a daemon a check started, in its own process group as the node
// agent runs a service, so that one signal reaches the workers it forks.
type daemon struct {
	argv []string
	pid  int
	out  *hosttest.Buffer // stdout and stderr, for failure messages
	done chan struct{}    // closed when the leader has exited
	err  error            // the leader's exit, once done is closed
}

// startDaemon starts argv and makes sure that its process group is gone when
// the test ends: SIGTERM first, SIGKILL if the leader outlasts waitDeadline,
// and SIGKILL again for whatever is left of the group, since a daemon's
// workers can outlive their leader. The group's id cannot have been reused by
// then: that would need the pid space to wrap. If the test failed, the
// daemon's output is logged.
func startDaemon(t *testing.T, argv ...string) *daemon {
	t.Helper()
	d := &daemon{argv: argv, out: &hosttest.Buffer{}, done: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", argv[0], err)
	}
	d.pid = cmd.Process.Pid
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			syscall.Kill(-d.pid, syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(waitDeadline):
				syscall.Kill(-d.pid, syscall.SIGKILL)
				<-d.done
			}
		}
		syscall.Kill(-d.pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("%s (pid %d) said:\n%s", strings.Join(d.argv, " "), d.pid, d.out)
		}
	})
	return d
}

// waitFor polls ready until it returns nil, failing the test with the last
// error and the daemon's output if the daemon exits first or waitDeadline
// passes.
func (d *daemon) waitFor(t *testing.T, what string, ready func() error) {
	t.Helper()
	hosttest.Eventually(t, waitDeadline, what, func() error {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-d.done:
			t.Fatalf("waiting for %s: %s exited (%v); last: %v\n%s", what, d.argv[0], d.err, err, d.out)
		default:
		}
		return fmt.Errorf("%w\n%s", err, d.out)
	})
}

// waitDial waits until something accepts TCP connections on addr, failing
// early, as waitFor does, if the daemon exits first.
func (d *daemon) waitDial(t *testing.T, addr string) {
	t.Helper()
	d.waitFor(t, "listener on "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func (d *daemon) stop(t *testing.T) { d.stopWith(t, syscall.SIGTERM) }

// stopWith signals the daemon's process group and waits for the leader to
// exit, as a restart in the node would.
func (d *daemon) stopWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-d.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(waitDeadline):
		t.Fatalf("%s did not stop on %v:\n%s", d.argv[0], sig, d.out)
	}
}

// freePort returns a TCP port on host that was free a moment ago. The
// daemons take their port from argv or a config, not from a socket handed
// over, so a small race with other processes on the host remains.
func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// moveToLoopback gives node n's leg on network a loopback address, as if it
// had been planned there, so that a daemon on this host sees a peer on
// loopback as that node, without touching the stack's subnets.
func moveToLoopback(p *plan.Plan, n *plan.Node, network, addr string) {
	old, a := n.Addr(network), netip.MustParseAddr(addr)
	n.Iface(network).Addr = a
	// The site mounts name both ends' addresses too.
	for i := range p.Nodes {
		if m := p.Nodes[i].Mount; m != nil && m.Network == network {
			if m.Storage == n.Name && m.Addr == old {
				m.Addr = a
			}
			if p.Nodes[i].Name == n.Name && m.Client == old {
				m.Client = a
			}
		}
	}
}

// mustRun runs a one-shot command, such as a Setup or a daemon's offline
// check, and returns its output; it fails the test with that output unless
// the command exits 0.
func mustRun(t *testing.T, argv ...string) string {
	t.Helper()
	return output(t, exec.Command(argv[0], argv[1:]...), argv)
}

// runCheckBinding is mustRun for a check that binds the config's listen
// addresses, like nginx -t: it runs in a network namespace of its own where
// binding any address works, so the stack's addresses need not exist on
// this host and nothing is reachable.
func runCheckBinding(t *testing.T, argv ...string) string {
	t.Helper()
	hosttest.RequireRoot(t) // for the network namespace
	cmd := exec.Command("/bin/sh", append([]string{"-c", `echo 1 >/proc/sys/net/ipv4/ip_nonlocal_bind && exec "$@"`, "sh"}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	return output(t, cmd, argv)
}

// output runs cmd, which runs argv, and returns what it printed. It logs the
// output too, so that -v shows what a check said even when it passed.
func output(t *testing.T, cmd *exec.Cmd, argv []string) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	t.Logf("%s:\n%s", strings.Join(argv, " "), out)
	return string(out)
}

// logsOnFailure shows the daemons' log files if the test fails: some
// daemons write their complaints there, not to stderr.
func logsOnFailure(t *testing.T, l render.Layout) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ents, _ := os.ReadDir(l.Log)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(l.Log, e.Name()))
			t.Logf("%s:\n%s", e.Name(), b)
		}
	})
}
