// Package e2e brings real stacks up on this host with the bulkhead binary,
// as a user would, and checks them from outside and from inside their
// nodes. It needs root, and the Debian packages .ci/run installs.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// bin is the bulkhead binary built for these tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bulkhead-e2e-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "bulkhead")
	build := exec.Command("go", "build", "-o", bin, "../cmd/bulkhead")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build bulkhead:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stack is one stack brought up by a test, in its own directory, with its
// own name, subnets and ports so that tests never collide.
type stack struct {
	t          testing.TB
	dir, name  string
	http       string // published host:port
	https      string
	privateNet string // first three octets, e.g. "10.231.0"
}

// unwatched is a stack file's tiers for the default stack without its
// monitor. Tests that do not look at monitoring use it, so that CI does
// not spend a node and a Prometheus on them; TestMonitor brings one up.
const unwatched = "tiers:\n  monitor: off\n"

// newStack writes a stack file and the sample site for a stack called name
// whose subnets are 10.X.0.0/24 and 10.X.1.0/28, published on 127.0.0.1
// ports base and base+1. extra is appended to the stack file.
func newStack(t testing.TB, name string, x, base int, extra string) *stack {
	t.Helper()
	hosttest.RequireRoot(t)
	dir := t.TempDir()
	s := &stack{t: t, dir: dir, name: name,
		http: fmt.Sprintf("127.0.0.1:%d", base), https: fmt.Sprintf("127.0.0.1:%d", base+1),
		privateNet: fmt.Sprintf("10.%d.0", x)}
	s.run("init", dir)
	file := fmt.Sprintf("name: %s\nnetworks:\n  private: 10.%d.0.0/24\n  public: 10.%d.1.0/28\npublish:\n  http: %s\n  https: %s\n%s",
		name, x, x, s.http, s.https, extra)
	if err := os.WriteFile(filepath.Join(dir, "bulkhead.yaml"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, leave the host as the test found it.
	t.Cleanup(func() {
		if t.Failed() {
			s.logSupervisor()
		}
		out, err := s.exec("down", "--purge")
		if err != nil && !strings.Contains(out, "no stack") {
			t.Errorf("down --purge: %v\n%s", err, out)
		}
		s.assertGone()
	})
	return s
}

// logSupervisor logs the last of the stack's supervisor log, which is all
// a CI run of a failed test leaves of what the supervisor pair did.
func (s *stack) logSupervisor() {
	data, err := os.ReadFile(filepath.Join("/var/lib/bulkhead", s.name, "supervisor.log"))
	if err != nil {
		s.t.Logf("supervisor.log: %v", err)
		return
	}
	const most = 8000
	if len(data) > most {
		data = data[len(data)-most:]
	}
	s.t.Logf("the last of supervisor.log:\n%s", data)
}

// exec runs bulkhead in the stack's directory and returns its combined
// output.
func (s *stack) exec(args ...string) (string, error) {
	var out bytes.Buffer
	err := s.command(&out, &out, args...)
	return out.String(), err
}

// stdout runs bulkhead in the stack's directory with its standard output
// and error apart.
func (s *stack) stdout(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := s.command(&out, &errb, args...)
	return out.String(), errb.String(), err
}

func (s *stack) command(stdout, stderr io.Writer, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd.Run()
}

// run is exec that fails the test on error.
func (s *stack) run(args ...string) string {
	s.t.Helper()
	out, err := s.exec(args...)
	if err != nil {
		s.t.Fatalf("bulkhead %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// in runs a command inside a node and returns its output and error.
func (s *stack) in(node string, argv ...string) (string, error) {
	return s.exec(append([]string{"exec", node, "--"}, argv...)...)
}

// assertGone checks that nothing of the stack is left on the host: no
// namespace, link, bridge, mount, container, nft table or process.
func (s *stack) assertGone() {
	t := s.t
	t.Helper()
	prefix := "bh-" + s.name + "-"
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), prefix) {
		t.Errorf("network namespaces left:\n%s", out)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), " "+s.name+"-") {
		t.Errorf("links left:\n%s", grep(string(out), " "+s.name+"-"))
	}
	if out, _ := exec.Command("runc", "list", "-q").Output(); strings.Contains(string(out), prefix) {
		t.Errorf("containers left:\n%s", out)
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "bulkhead_"+strings.ReplaceAll(s.name, "-", "_")) {
		t.Errorf("nft tables left:\n%s", out)
	}
	if data, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(data), "/"+s.name+"/nodes/") {
		t.Errorf("mounts left:\n%s", grep(string(data), "/"+s.name+"/nodes/"))
	}
	out, _ := exec.Command("ps", "-eo", "pid,args").Output()
	for _, cmd := range []string{"supervise", "keep"} {
		if strings.Contains(string(out), cmd+" --stack "+s.name+" ") {
			t.Errorf("%s left:\n%s", cmd, grep(string(out), cmd+" --stack "+s.name))
		}
	}
}

func grep(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// listen occupies a TCP address, for tests of conflicts.
func listen(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}
