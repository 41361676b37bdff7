package local

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/plan"
)

// pairTestEnv makes this package's test binary play bulkhead's supervise
// and keep commands (see TestMain), so that TestSupervisorPair runs the
// real pair of processes without a build of the whole command.
const pairTestEnv = "BULKHEAD_TEST_PAIR"

func TestMain(m *testing.M) {
	if os.Getenv(pairTestEnv) != "" {
		os.Exit(pairMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// pairMain is what cli's supervise and keep commands do with args.
func pairMain(args []string) int {
	if len(args) == 0 {
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	stack := fs.String("stack", "", "")
	root := fs.String("root", "", "")
	paired := fs.Bool("paired", false, "")
	restarted := fs.Bool("restarted", false, "")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &Driver{Root: *root, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	var err error
	switch args[0] {
	case "supervise":
		var o SuperviseOptions
		if *paired {
			if o.Pair, err = InheritPair(); err != nil {
				break
			}
			o.Restarted = *restarted
		}
		err = d.Supervise(ctx, *stack, o)
	case "keep":
		var l *PairLink
		if l, err = InheritPair(); err == nil {
			err = d.Keep(ctx, *stack, l)
		}
	default:
		err = fmt.Errorf("unknown command %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// pairStack is a stack of no nodes with one published loopback port,
// under a temporary root whose bulkhead binary is this test binary.
type pairStack struct {
	d     *Driver
	p     *plan.Plan
	stack string
	addr  string // the published port
}

func newPairStack(t *testing.T) *pairStack {
	t.Helper()
	t.Setenv(pairTestEnv, "1") // the pair's processes inherit it
	s := &pairStack{d: &Driver{Root: filepath.Join(tempDir(t), "root")}, stack: "pair"}
	ps := s.d.paths(s.stack)
	if err := installBinary(ps.binary()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	l.Close()
	s.p = &plan.Plan{Stack: s.stack, Published: []plan.Forward{{Listen: netip.MustParseAddrPort(s.addr), Node: "edge", Target: netip.MustParseAddrPort("127.0.0.1:9")}}}
	if err := os.MkdirAll(ps.stack, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(ps.plan(), s.p, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever a failed test left running.
		procs, _ := pairProcesses(ps.binary(), s.stack, s.d.root())
		for _, o := range procs {
			pid, _ := strconv.Atoi(o.Name)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if len(procs) > 0 {
			log, _ := os.ReadFile(ps.supervisorLog())
			t.Logf("supervisor.log:\n%s", log)
		}
	})
	return s
}

// start starts the pair as up does.
func (s *pairStack) start(t *testing.T) {
	t.Helper()
	j, err := loadJournal(s.d.paths(s.stack).journal(), s.stack)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.d.startSupervisor(context.Background(), s.p, j, nil); err != nil {
		t.Fatal(err)
	}
}

// recorded is the journal's live process of kind; zero if none runs.
func (s *pairStack) recorded(t *testing.T, kind string) Object {
	t.Helper()
	j, err := loadJournal(s.d.paths(s.stack).journal(), s.stack)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range j.list(kind) {
		if alive(o) {
			return o
		}
	}
	return Object{}
}

// running lists the pair's processes that run, by their command lines.
func (s *pairStack) running(t *testing.T) []Object {
	t.Helper()
	procs, err := pairProcesses(s.d.paths(s.stack).binary(), s.stack, s.d.root())
	if err != nil {
		t.Fatal(err)
	}
	return procs
}

// serving reports whether a supervisor runs the stack's plan: each says
// so once it has started (see Supervise).
func (s *pairStack) serving() bool {
	ps := s.d.paths(s.stack)
	want, err := fileHash(ps.plan())
	if err != nil {
		return false
	}
	got, err := os.ReadFile(ps.supervised())
	return err == nil && string(got) == hex.EncodeToString(want)
}

// kill SIGKILLs the live recorded process of kind, and returns how long
// until the journal records another of kind that runs and a supervisor
// runs the plan again.
func (s *pairStack) kill(t *testing.T, kind string) time.Duration {
	t.Helper()
	old := s.recorded(t, kind)
	if old.Name == "" {
		t.Fatalf("no live %s recorded", kind)
	}
	pid, _ := strconv.Atoi(old.Name)
	if kind == KindProcess {
		// The new supervisor says it runs the plan anew.
		if err := os.Remove(s.d.paths(s.stack).supervised()); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Polled every 5 ms, for a measure finer than Eventually's.
	var back Object
	for deadline := t0.Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if back = s.recorded(t, kind); back.Name != "" && back != old && s.serving() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new %s within a minute after %s %s was killed", kind, kind, old.Name)
		}
	}
	took := time.Since(t0)
	j, err := loadJournal(s.d.paths(s.stack).journal(), s.stack)
	if err != nil {
		t.Fatal(err)
	}
	if got := j.list(kind); !slices.Equal(got, []Object{back}) {
		t.Errorf("after %s %s was killed, the journal records %v of its kind; want only %s, which took its place", kind, old.Name, got, back.Name)
	}
	if running := s.running(t); len(running) != 2 {
		t.Errorf("after %s %s was killed, %s took its place, and the pair's processes are %v; want 2", kind, old.Name, back.Name, running)
	}
	return took
}

// TestSupervisorPair runs the supervisor and its keeper as real
// processes: each killed with SIGKILL is started again by the other, the
// journal records the new one, and a supervisor runs the plan again;
// status says both run; down stops both, and nothing of the pair runs
// after it. A supervisor stopped on purpose (SIGTERM) takes its keeper
// with it, and neither is started again.
func TestSupervisorPair(t *testing.T) {
	s := newPairStack(t)
	s.start(t)
	hosttest.Eventually(t, time.Minute, "the supervisor to run the plan", s.serving)
	if running := s.running(t); len(running) != 2 {
		t.Fatalf("the pair's processes: %v, want the supervisor and its keeper", running)
	}
	// What status reads of the nodes' restarts outlives the supervisor
	// that counted them.
	hosttest.Eventually(t, time.Minute, "the supervisor to start its counts", func() bool {
		_, err := os.Stat(s.d.paths(s.stack).supervisorState())
		return err == nil
	})
	counts := &supervisorState{Nodes: map[string]*restarts{"x": {Count: 3, CrashLoop: true}}}
	if err := counts.save(s.d.paths(s.stack).supervisorState()); err != nil {
		t.Fatal(err)
	}
	t.Logf("supervisor killed: a new one serves after %v", s.kill(t, KindProcess))
	if st, err := loadSupervisorState(s.d.paths(s.stack).supervisorState()); err != nil || st.Nodes["x"] == nil || st.Nodes["x"].Count != 3 || !st.Nodes["x"].CrashLoop {
		t.Errorf("the restarted supervisor's counts: %+v, %v; want the 3 restarts and crash loop of the one killed", st, err)
	}
	t.Logf("keeper killed: a new one runs after %v", s.kill(t, KindKeeper))
	// The supervisor the first keeper started, watched by the keeper
	// that supervisor started.
	t.Logf("supervisor killed again: a new one serves after %v", s.kill(t, KindProcess))

	st, err := s.d.Status(context.Background(), s.stack)
	if err != nil || !st.Supervisor || !st.Keeper {
		t.Errorf("status after the restarts: %+v, %v; want the supervisor and its keeper running", st, err)
	}
	if err := s.d.Down(context.Background(), s.stack, false); err != nil {
		t.Fatal(err)
	}
	if running := s.running(t); len(running) > 0 {
		t.Errorf("down left the pair's processes running: %v", running)
	}
	if objs := s.recorded(t, KindProcess).Name + s.recorded(t, KindKeeper).Name; objs != "" {
		t.Errorf("down left a live process in the journal: %s", objs)
	}

	// Stopped on purpose.
	s.start(t)
	hosttest.Eventually(t, time.Minute, "the supervisor to run the plan", s.serving)
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on the published %s: the supervisor listens on nothing", s.addr)
	}
	sup := s.recorded(t, KindProcess)
	pid, _ := strconv.Atoi(sup.Name)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	hosttest.Eventually(t, time.Minute, "the pair to end after its supervisor was stopped", func() bool {
		return len(s.running(t)) == 0
	})
	// The keeper would have started one at once.
	time.Sleep(500 * time.Millisecond)
	if running := s.running(t); len(running) > 0 {
		t.Errorf("a supervisor stopped on purpose was started again: %v", running)
	}
	j, err := loadJournal(s.d.paths(s.stack).journal(), s.stack)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(j.list(KindProcess), j.list(KindKeeper)...); len(got) != 2 || !slices.Contains(got, sup) {
		t.Errorf("the journal after a stop on purpose: %v, want the two up started", got)
	}
	if log, _ := os.ReadFile(s.d.paths(s.stack).supervisorLog()); !strings.Contains(string(log), "stopped on purpose") {
		t.Errorf("the keeper did not say it let the supervisor go:\n%s", log)
	}
}

// TestSupervisorHoldingPortsReplaced: up replaces a running pair whose
// supervisor holds a published port, as one of a bulkhead that forwarded
// the ports itself does, even when it runs the same plan; a pair that
// holds none it leaves alone.
func TestSupervisorHoldingPortsReplaced(t *testing.T) {
	s := newPairStack(t)
	s.start(t)
	hosttest.Eventually(t, time.Minute, "the supervisor to run the plan", s.serving)
	first := s.recorded(t, KindProcess)
	s.start(t)
	if got := s.recorded(t, KindProcess); got != first {
		t.Fatalf("up with the same plan replaced supervisor %s by %s", first.Name, got.Name)
	}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s.start(t)
	if got := s.recorded(t, KindProcess); got.Name == "" || got == first {
		t.Errorf("with the published port held, up kept supervisor %s (now %q)", first.Name, got.Name)
	}
	if err := s.d.Down(context.Background(), s.stack, false); err != nil {
		t.Fatal(err)
	}
}

// TestSupervisorOfAReplacedBinaryReplaced: an upgrade replaces the
// stack's binary, and the running supervisor goes on with the old code,
// its site mounts included, whatever plan it is sent; the next up
// replaces the pair, and the one after keeps the new one.
func TestSupervisorOfAReplacedBinaryReplaced(t *testing.T) {
	s := newPairStack(t)
	s.start(t)
	hosttest.Eventually(t, time.Minute, "the supervisor to run the plan", s.serving)
	first := s.recorded(t, KindProcess)
	// As installBinary does: a new file renamed over the old.
	bin := s.d.paths(s.stack).binary()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin+".new", data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	second := s.recorded(t, KindProcess)
	if second.Name == "" || second == first {
		t.Fatalf("after the binary was replaced, up kept supervisor %s (now %q)", first.Name, second.Name)
	}
	hosttest.Eventually(t, time.Minute, "the new supervisor to run the plan", s.serving)
	s.start(t)
	if got := s.recorded(t, KindProcess); got != second {
		t.Errorf("an up with nothing replaced replaced supervisor %s by %s", second.Name, got.Name)
	}
	if err := s.d.Down(context.Background(), s.stack, false); err != nil {
		t.Fatal(err)
	}
}

// A stack's pair runs the stack's own binary; a pair an older bulkhead
// started from the host's shared binary is still the stack's, so that an
// up after an upgrade replaces it rather than starting a second one.
func TestPairCommandBinaries(t *testing.T) {
	root := "/var/lib/bulkhead"
	own := filepath.Join(root, "web", "bin", "bulkhead")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{own, "supervise", "--stack", "web", "--root", root, "--paired"}, KindProcess},
		{[]string{own, "keep", "--stack", "web", "--root", root}, KindKeeper},
		{[]string{filepath.Join(root, "bin", "bulkhead"), "supervise", "--stack", "web", "--root", root}, KindProcess},
		{[]string{filepath.Join(root, "other", "bin", "bulkhead"), "supervise", "--stack", "web", "--root", root}, ""},
		{[]string{"/usr/local/bin/bulkhead", "supervise", "--stack", "web", "--root", root}, ""},
		{[]string{own, "supervise", "--stack", "webb", "--root", root}, ""},
		{[]string{own, "supervise", "--stack", "web", "--root", "/elsewhere"}, ""},
	} {
		if got := pairCommand(c.args, own, "web", root); got != c.want {
			t.Errorf("pairCommand(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// TestRecordPairForgetsDyingPeer: a paired process hears of its peer's
// death when the peer's pipe closes, and the kernel closes a killed
// process's descriptors a moment before it marks it exited. The new peer
// then takes the dead one's place in the journal: a process that still
// looks alive there for a moment stays out of it all the same, rather than
// being recorded as the keeper beside its successor until the next up.
func TestRecordPairForgetsDyingPeer(t *testing.T) {
	d := &Driver{Root: filepath.Join(tempDir(t), "root")}
	const stack = "pair"
	ps := d.paths(stack)
	if err := os.MkdirAll(ps.stack, 0o700); err != nil {
		t.Fatal(err)
	}
	me, err := self(KindProcess)
	if err != nil {
		t.Fatal(err)
	}
	// The dead keeper: its pipe has ended, its process has not quite.
	dying := exec.Command("sleep", "60")
	if err := dying.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { dying.Wait(); close(done) }()
	defer func() { dying.Process.Kill(); <-done }()
	old, err := procStart(dying.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(300*time.Millisecond, func() { dying.Process.Kill() })
	oldKeeper := Object{Kind: KindKeeper, Name: strconv.Itoa(dying.Process.Pid), Detail: old}
	// The new keeper: a process that runs past the test.
	next := exec.Command("sleep", "60")
	if err := next.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { next.Process.Kill(); next.Wait() }()
	start, err := procStart(next.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	newKeeper := Object{Kind: KindKeeper, Name: strconv.Itoa(next.Process.Pid), Detail: start}

	j, err := loadJournal(ps.journal(), stack)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.record(me, oldKeeper); err != nil {
		t.Fatal(err)
	}
	if err := d.recordPair(context.Background(), stack, me, newKeeper); err != nil {
		t.Fatal(err)
	}
	if j, err = loadJournal(ps.journal(), stack); err != nil {
		t.Fatal(err)
	}
	if got := j.list(KindKeeper); !slices.Equal(got, []Object{newKeeper}) {
		t.Errorf("the journal's keepers after the new one was recorded: %v, want only %s (the dying %s forgotten)", got, newKeeper.Name, oldKeeper.Name)
	}
	if got := j.list(KindProcess); !slices.Equal(got, []Object{me}) {
		t.Errorf("the journal's supervisors: %v, want only this one, %s", got, me.Name)
	}
}

// TestPairProcessesOnlyHostRoot: a node's processes show in the host's
// /proc, and root in a node can run one whose command line reads as the
// stack's supervisor or keeper (exec -a, with the binary's path from its
// own mountinfo). Such a process is not the pair: status would call a dead
// supervisor running, up would adopt it into the journal and signal it.
// Only a process of the host's root, in the host's pid namespace, counts.
func TestPairProcessesOnlyHostRoot(t *testing.T) {
	hosttest.RequireRoot(t)
	root := filepath.Join(tempDir(t), "root")
	const stack = "pair"
	bin := (&Driver{Root: root}).paths(stack).binary()
	// sh runs the script its first argument names, under a command line
	// of the pair's.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	// Not under t.TempDir, whose parent only root may enter.
	dir, err := os.MkdirTemp("", "pair-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"supervise", "keep"} {
		if err := os.WriteFile(filepath.Join(dir, cmd), []byte("sleep 60\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := func(cmd string) []string { return []string{bin, cmd, "--stack", stack, "--root", root} }
	start := func(c *exec.Cmd) *exec.Cmd {
		t.Helper()
		c.Dir = dir
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	// As a node's root is on the host: an id of the node's block.
	notRoot := start(&exec.Cmd{Path: sh, Args: args("supervise"), SysProcAttr: &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 165536, Gid: 165536}}})
	// As a node's process is: root in a pid namespace of its own.
	otherNS := start(&exec.Cmd{Path: sh, Args: args("keep"), SysProcAttr: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}})
	// The host's root, as the real pair is.
	real := start(&exec.Cmd{Path: sh, Args: args("keep")})
	hosttest.Eventually(t, time.Minute, "the processes to have exec'd", func() bool {
		for _, c := range []*exec.Cmd{notRoot, otherNS, real} {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c.Process.Pid))
			if err != nil || !strings.HasPrefix(string(data), bin+"\x00") {
				return false
			}
		}
		return true
	})
	got, err := pairProcesses(bin, stack, root)
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, o := range got {
		pids = append(pids, o.Name)
	}
	if want := []string{strconv.Itoa(real.Process.Pid)}; !slices.Equal(pids, want) {
		t.Errorf("pairProcesses found %v; want only the host root's %v, not %d (uid 165536) or %d (a pid namespace of its own)", pids, want, notRoot.Process.Pid, otherNS.Process.Pid)
	}
}
