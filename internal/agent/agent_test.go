package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/service"
)

// patience bounds every wait for the agent to do something. Tests poll up
// to it and never assume how fast the machine is.
const patience = 10 * time.Second

// running is one Run in the background.
type running struct {
	socket string
	logDir string
	cancel context.CancelFunc
	done   chan error
}

// start runs an agent with cfg, serving on a socket in a temporary
// directory with short backoffs unless cfg sets others, and stops it when
// the test ends.
func start(t *testing.T, cfg Config) *running {
	t.Helper()
	dir := t.TempDir()
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(dir, "agent.sock")
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(dir, "log")
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	if cfg.Grace == 0 {
		cfg.Grace = 2 * time.Second
	}
	cfg.Node = "test"
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{socket: cfg.Socket, logDir: cfg.LogDir, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, cfg) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// testWriter sends the agent's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// stop cancels the agent and waits for Run to return.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // a second stop sees it too
		return err
	case <-time.After(patience + 10*time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// service returns the status of one service, or a zero one while the
// socket is not up yet.
func (r *running) service(t *testing.T, name string) ServiceStatus {
	t.Helper()
	st, err := Query(context.Background(), r.socket)
	if err != nil {
		return ServiceStatus{}
	}
	for _, s := range st.Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("status has no service %s: %+v", name, st)
	return ServiceStatus{}
}

func (r *running) logs(name string) []string {
	lines, _ := Logs(context.Background(), r.socket, name, 0)
	return lines
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestLogs(t *testing.T) {
	r := start(t, Config{Services: []service.Service{
		{Name: "talker", Argv: sh("echo out-line; echo err-line >&2; exec sleep 1000")},
	}})
	hosttest.Eventually(t, patience, "both lines in Logs", func() bool {
		l := r.logs("talker")
		return slices.Contains(l, "out-line") && slices.Contains(l, "err-line")
	})
	// The ring and the file are written together, so the file has them now.
	data, err := os.ReadFile(filepath.Join(r.logDir, "talker.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"out-line", "err-line"} {
		if !slices.Contains(strings.Split(string(data), "\n"), want) {
			t.Errorf("talker.log lacks line %q:\n%s", want, data)
		}
	}
	last, err := Logs(context.Background(), r.socket, "talker", 1)
	if err != nil || len(last) != 1 {
		t.Errorf("Logs(n=1) = %q, %v; want one line", last, err)
	}
	if _, err := Logs(context.Background(), r.socket, "nosuch", 1); err == nil {
		t.Error("Logs of an unknown service: no error")
	}
}

func TestRestartAfterKill(t *testing.T) {
	r := start(t, Config{Services: []service.Service{{Name: "sleeper", Argv: []string{"sleep", "1000"}}}})
	var first ServiceStatus
	hosttest.Eventually(t, patience, "sleeper running", func() bool { first = r.service(t, "sleeper"); return first.State == StateRunning })
	if first.PID <= 1 || first.Restarts != 0 {
		t.Fatalf("first start: %+v", first)
	}
	st, err := Query(context.Background(), r.socket)
	if err != nil || !st.Healthy {
		t.Errorf("Query = %+v, %v; want healthy", st, err)
	}
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var again ServiceStatus
	hosttest.Eventually(t, patience, "sleeper restarted", func() bool {
		again = r.service(t, "sleeper")
		return again.State == StateRunning && again.Restarts == 1
	})
	if again.PID == first.PID {
		t.Errorf("restarted with the same pid %d", again.PID)
	}
	if e := again.LastExit; e == nil || e.Signal != "SIGKILL" || e.Code != -1 {
		t.Errorf("last exit = %+v; want killed by SIGKILL", e)
	}
}

func TestLeftoversKilled(t *testing.T) {
	r := start(t, Config{Services: []service.Service{
		// Exits, leaving a background child in its process group.
		{Name: "leaky", Argv: sh("sleep 1000 & echo left=$!; exit 1")},
	}})
	left := 0
	hosttest.Eventually(t, patience, "leaky restarted", func() bool {
		for _, l := range r.logs("leaky") {
			if v, ok := strings.CutPrefix(l, "left="); ok && left == 0 {
				left, _ = strconv.Atoi(v)
			}
		}
		return left > 0 && r.service(t, "leaky").Restarts >= 1
	})
	// Outside reap-all mode the leftover's zombie is its new parent's to
	// reap; dead is what counts.
	hosttest.Eventually(t, patience, fmt.Sprintf("leftover pid %d dead", left), func() bool {
		state, _ := procState(left)
		return state == "" || state == "Z"
	})
}

func TestStartFailure(t *testing.T) {
	r := start(t, Config{Services: []service.Service{{Name: "ghost", Argv: []string{"/nonexistent/ghostd"}}}})
	var st ServiceStatus
	hosttest.Eventually(t, patience, "ghost failed", func() bool { st = r.service(t, "ghost"); return st.State == StateFailed })
	if !strings.Contains(st.Error, "/nonexistent/ghostd") || st.PID != 0 {
		t.Errorf("ghost = %+v; want an error naming the program, no pid", st)
	}
}

func TestDontRestart(t *testing.T) {
	var mu sync.Mutex
	starts := map[string]int{}
	r := start(t, Config{
		Services: []service.Service{
			{Name: "done", Argv: sh("exit 125")},
			{Name: "crasher", Argv: sh("exit 1")},
		},
		started: func(name string, _ int, _ time.Time) { mu.Lock(); starts[name]++; mu.Unlock() },
	})
	// The crasher shares the agent and the backoffs: once it has been
	// restarted a few times, "done" has had as many chances.
	hosttest.Eventually(t, patience, "crasher restarted 3 times", func() bool { return r.service(t, "crasher").Restarts >= 3 })
	st := r.service(t, "done")
	if st.State != StateStopped || st.Restarts != 0 || st.PID != 0 {
		t.Errorf("done = %+v; want stopped, no restarts, no pid", st)
	}
	if st.LastExit == nil || st.LastExit.Code != DontRestart {
		t.Errorf("done last exit = %+v; want code %d", st.LastExit, DontRestart)
	}
	mu.Lock()
	defer mu.Unlock()
	if starts["done"] != 1 {
		t.Errorf("done started %d times; want 1", starts["done"])
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	minB := 100 * time.Millisecond
	r := start(t, Config{
		Services:    []service.Service{{Name: "crasher", Argv: sh("exit 1")}},
		MinBackoff:  minB,
		MaxBackoff:  10 * time.Second,
		StableAfter: time.Hour,
		started:     func(_ string, _ int, t time.Time) { mu.Lock(); at = append(at, t); mu.Unlock() },
	})
	hosttest.Eventually(t, patience, "4 starts", func() bool { mu.Lock(); defer mu.Unlock(); return len(at) >= 4 })
	mu.Lock()
	gaps := []time.Duration{at[1].Sub(at[0]), at[2].Sub(at[1]), at[3].Sub(at[2])}
	mu.Unlock()
	t.Logf("gaps between starts: %v", gaps)
	for i, g := range gaps {
		// Timers never fire early, so this lower bound holds on any
		// machine; doubling each time, it shows the backoff.
		if want := minB << i; g < want {
			t.Errorf("gap %d = %v; want at least %v", i+1, g, want)
		}
	}
	if st := r.service(t, "crasher"); st.Restarts < 3 || st.LastExit == nil || st.LastExit.Code != 1 {
		t.Errorf("crasher = %+v; want ≥3 restarts, last exit code 1", st)
	}
}

func TestBackoffPolicy(t *testing.T) {
	b := backoff{min: time.Second, max: 5 * time.Second, stable: time.Minute}
	steps := []struct {
		ran  time.Duration
		want time.Duration
	}{
		{0, 1 * time.Second},
		{time.Second, 2 * time.Second},
		{0, 4 * time.Second},
		{0, 5 * time.Second}, // capped
		{0, 5 * time.Second},
		{time.Minute, 1 * time.Second}, // ran stably: reset
		{time.Second, 2 * time.Second},
	}
	for i, s := range steps {
		if got := b.next(s.ran); got != s.want {
			t.Errorf("step %d: next(%v) = %v; want %v", i, s.ran, got, s.want)
		}
	}
}

func TestSetupRunsOnce(t *testing.T) {
	dir := t.TempDir()
	count, created := filepath.Join(dir, "count"), filepath.Join(dir, "created")
	svc := service.Service{
		Name:    "db",
		Setup:   sh(fmt.Sprintf("echo setup-ran; echo x >> %s; touch %s", count, created)),
		Creates: created,
		// Exits unless setup finished first, which would show as a restart.
		Argv: sh(fmt.Sprintf("test -f %s || exit 3; exec sleep 1000", created)),
	}
	for run := 1; run <= 2; run++ {
		r := start(t, Config{Services: []service.Service{svc}})
		var st ServiceStatus
		hosttest.Eventually(t, patience, "db running", func() bool { st = r.service(t, "db"); return st.State == StateRunning })
		if st.Restarts != 0 {
			t.Errorf("run %d: daemon restarted %d times; it started before setup finished", run, st.Restarts)
		}
		want := "setup-ran"
		if run == 2 {
			want = "bulkhead-agent: setup skipped: " + created + " exists"
		}
		if l := r.logs("db"); !slices.ContainsFunc(l, func(s string) bool { return strings.HasSuffix(s, want) }) {
			t.Errorf("run %d: logs lack %q: %q", run, want, l)
		}
		if err := r.stop(t); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(count)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(data), "x\n"); n != 1 {
			t.Errorf("after run %d: setup ran %d times; want 1", run, n)
		}
	}
}

func TestSetupFailureBlocksStart(t *testing.T) {
	dir := t.TempDir()
	tries, started := filepath.Join(dir, "tries"), filepath.Join(dir, "started")
	r := start(t, Config{Services: []service.Service{{
		Name:    "db",
		Setup:   sh(fmt.Sprintf("echo x >> %s; echo setup-broken; exit 1", tries)),
		Creates: filepath.Join(dir, "never"),
		Argv:    sh(fmt.Sprintf("touch %s; exec sleep 1000", started)),
	}}})
	var st ServiceStatus
	hosttest.Eventually(t, patience, "setup retried and failed", func() bool {
		data, _ := os.ReadFile(tries)
		st = r.service(t, "db")
		return strings.Count(string(data), "x\n") >= 2 && st.State == StateFailed
	})
	if _, err := os.Stat(started); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("daemon started despite failed setup (stat: %v)", err)
	}
	if st.PID != 0 || st.Restarts != 0 || !strings.Contains(st.Error, "setup exited with code 1") {
		t.Errorf("db = %+v; want no pid, no restarts, a setup error", st)
	}
	if q, err := Query(context.Background(), r.socket); err != nil || q.Healthy {
		t.Errorf("Query = %+v, %v; want unhealthy", q, err)
	}
	if l := r.logs("db"); !slices.Contains(l, "setup-broken") {
		t.Errorf("logs lack setup output: %q", l)
	}
}

func TestShutdown(t *testing.T) {
	for _, reapAll := range []bool{false, true} {
		t.Run(fmt.Sprintf("reapAll=%v", reapAll), func(t *testing.T) {
			if reapAll {
				subreaper(t)
			}
			grace := time.Second
			r := start(t, Config{
				ReapAll: reapAll,
				Grace:   grace,
				Services: []service.Service{
					// A grandchild in the background, in the same group.
					{Name: "bg", Argv: sh("sleep 1000 & echo bg=$!; sleep 1000")},
					// Ignores SIGTERM (and so does its sleep, which inherits
					// that), so only SIGKILL after the grace period ends it.
					{Name: "stubborn", Argv: sh(`trap "" TERM; echo ready; sleep 1000`)},
				},
			})
			var bg int
			var pids []int
			// "ready" is printed before the shells fork their sleeps, so
			// wait until every process is there, not just the output.
			hosttest.Eventually(t, patience, "both services and their children up", func() bool {
				for _, l := range r.logs("bg") {
					if v, ok := strings.CutPrefix(l, "bg="); ok {
						bg, _ = strconv.Atoi(v)
					}
				}
				if bg == 0 || !slices.Contains(r.logs("stubborn"), "ready") ||
					r.service(t, "bg").State != StateRunning || r.service(t, "stubborn").State != StateRunning {
					return false
				}
				pids = []int{bg}
				for _, name := range []string{"bg", "stubborn"} {
					pid := r.service(t, name).PID
					pids = append(pids, pid)
					pids = append(pids, descendants(t, pid)...)
				}
				slices.Sort(pids)
				pids = slices.Compact(pids)
				return len(pids) >= 5 // bg's sh, its two sleeps; stubborn's sh and sleep
			})
			began := time.Now()
			if err := r.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			took := time.Since(began)
			if took < grace {
				t.Errorf("Run returned after %v, before the grace period %v: stubborn ignores SIGTERM", took, grace)
			}
			if took > grace+2*killWait {
				t.Errorf("Run took %v to return; grace is %v", took, grace)
			}
			for _, pid := range pids {
				if state, ppid := procState(pid); state != "" && !(state == "Z" && ppid != os.Getpid() && !reapAll) {
					// Outside reap-all mode, an orphan's zombie is its
					// new parent's to reap, not ours.
					t.Errorf("pid %d still exists after Run: state %s, parent %d", pid, state, ppid)
				}
			}
			if _, err := os.Lstat(r.socket); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("socket not removed: %v", err)
			}
		})
	}
}

func TestReapOrphans(t *testing.T) {
	subreaper(t)
	r := start(t, Config{ReapAll: true, Services: []service.Service{
		// The subshell exits at once, so its background sleep is orphaned
		// and re-parented to this process, which must reap it.
		{Name: "forker", Argv: sh("(sleep 0.2 & echo orphan=$!); exec sleep 1000")},
	}})
	var orphan int
	var first ServiceStatus
	hosttest.Eventually(t, patience, "forker running", func() bool {
		for _, l := range r.logs("forker") {
			if v, ok := strings.CutPrefix(l, "orphan="); ok {
				orphan, _ = strconv.Atoi(v)
			}
		}
		first = r.service(t, "forker")
		return orphan > 0 && first.State == StateRunning
	})
	hosttest.Eventually(t, patience, "the orphan reaped", func() bool { state, _ := procState(orphan); return state == "" })
	if z := zombieChildren(t); len(z) > 0 {
		t.Errorf("zombie children left: %v", z)
	}
	// Reaping the orphan must not have been taken for the daemon's exit.
	if st := r.service(t, "forker"); st.State != StateRunning || st.PID != first.PID || st.Restarts != 0 {
		t.Errorf("forker = %+v; want still running as pid %d", st, first.PID)
	}
	// And the reaper hands the daemon's own exit to its supervisor.
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	hosttest.Eventually(t, patience, "forker restarted", func() bool {
		st := r.service(t, "forker")
		return st.State == StateRunning && st.Restarts == 1 && st.PID != first.PID
	})
}

func TestSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.sock")
	// A stale socket: its listener is gone but the file stays.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	r := start(t, Config{Socket: path, Services: []service.Service{{Name: "s", Argv: []string{"sleep", "1000"}}}})
	hosttest.Eventually(t, patience, "agent answering", func() bool { _, err := Query(context.Background(), path); return err == nil })
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v; want a socket with 0600", fi.Mode())
	}
	// A second agent must not take over a live socket.
	err = Run(context.Background(), Config{Socket: path, Services: []service.Service{{Name: "s", Argv: []string{"true"}}}})
	if err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("second Run on a live socket: %v; want an error", err)
	}
	r.stop(t)

	// Nor replace what is not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	err = Run(context.Background(), Config{Socket: file, Services: []service.Service{{Name: "s", Argv: []string{"true"}}}})
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Run on a regular file: %v; want an error", err)
	}
}

func TestLoadServices(t *testing.T) {
	tests := []struct {
		name, json, err string
	}{
		{"ok", `[{"name":"db","argv":["mariadbd"],"setup":["mariadb-install-db"],"creates":"/var/lib/mysql/mysql"}]`, ""},
		{"empty", `[]`, ""},
		{"no argv", `[{"name":"db"}]`, "empty argv"},
		{"bad name", `[{"name":"../x","argv":["true"]}]`, "invalid name"},
		{"duplicate", `[{"name":"a","argv":["true"]},{"name":"a","argv":["true"]}]`, "duplicate"},
		{"creates alone", `[{"name":"a","argv":["true"],"creates":"/x"}]`, "without a setup"},
		{"not json", `{`, "unexpected end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "services.json")
			os.WriteFile(path, []byte(tt.json), 0o644)
			_, err := LoadServices(path)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("LoadServices = %v; want error containing %q", err, tt.err)
			}
		})
	}
}

func TestRing(t *testing.T) {
	r := ring{lines: make([]string, 3)}
	if got := r.last(0); len(got) != 0 {
		t.Errorf("empty ring: %q", got)
	}
	for i := 1; i <= 5; i++ {
		r.add(strconv.Itoa(i))
	}
	for n, want := range map[int][]string{0: {"3", "4", "5"}, 2: {"4", "5"}, 9: {"3", "4", "5"}} {
		if got := r.last(n); !slices.Equal(got, want) {
			t.Errorf("last(%d) = %q; want %q", n, got, want)
		}
	}
}

func TestLogFileRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.log")
	l, err := openLog(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"aaaa", "bbbb", "cccc"} { // 5 bytes each with \n
		if err := l.write(s); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	for p, want := range map[string]string{path: "cccc\n", path + ".1": "aaaa\nbbbb\n"} {
		if data, _ := os.ReadFile(p); string(data) != want {
			t.Errorf("%s = %q; want %q", filepath.Base(p), data, want)
		}
	}
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// subreaper makes this process a child subreaper for the rest of the test,
// so that orphans are re-parented to it as they would be to PID 1.
func subreaper(t *testing.T) {
	t.Helper()
	_, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	hosttest.Require(t, e == 0, "prctl(PR_SET_CHILD_SUBREAPER), Linux 3.4 or later: %v", e)
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 0, 0) })
}

// procState returns a process's state letter and parent, or "" when it does
// not exist.
func procState(pid int) (state string, ppid int) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return "", 0
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0], ppid
}

// processes maps every pid to its state and parent.
func processes(t *testing.T) map[int][2]string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][2]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid := procState(pid); state != "" {
			out[pid] = [2]string{state, strconv.Itoa(ppid)}
		}
	}
	return out
}

func descendants(t *testing.T, root int) []int {
	t.Helper()
	procs := processes(t)
	var out []int
	var walk func(int)
	walk = func(p int) {
		for pid, sp := range procs {
			if sp[1] == strconv.Itoa(p) {
				out = append(out, pid)
				walk(pid)
			}
		}
	}
	walk(root)
	return out
}

func zombieChildren(t *testing.T) []int {
	t.Helper()
	var out []int
	me := strconv.Itoa(os.Getpid())
	for pid, sp := range processes(t) {
		if sp[0] == "Z" && sp[1] == me {
			out = append(out, pid)
		}
	}
	return out
}

// TestReadiness: a running service that does not accept connections on its
// Ready address is not healthy until it does.
func TestReadiness(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there yet
	r := start(t, Config{Services: []service.Service{
		{Name: "slow", Argv: sh("sleep 1000"), Ready: []string{addr}},
	}})
	hosttest.Eventually(t, patience, "slow running", func() bool { return r.service(t, "slow").State == StateRunning })
	q, err := Query(context.Background(), r.socket)
	if err != nil || q.Healthy || q.Services[0].Ready || !strings.Contains(q.Services[0].Error, "not accepting connections") {
		t.Fatalf("before listening: %+v, %v; want unhealthy, not ready", q, err)
	}
	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	q, err = Query(context.Background(), r.socket)
	if err != nil || !q.Healthy || !q.Services[0].Ready {
		t.Fatalf("listening: %+v, %v; want healthy", q, err)
	}
}

// TestInit: a service's Init runs once it accepts connections, is retried
// until it succeeds, and the service is ready only then.
func TestInit(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	marks := filepath.Join(t.TempDir(), "init")
	// The first run fails, the second succeeds.
	script := `echo run >> "$1"; [ "$(wc -l < "$1")" -ge 2 ]`
	r := start(t, Config{MinBackoff: 100 * time.Millisecond, Services: []service.Service{
		{Name: "db", Argv: sh("sleep 1000"), Ready: []string{l.Addr().String()},
			Init: []string{"sh", "-c", script, "sh", marks}},
	}})
	hosttest.Eventually(t, patience, "init done", func() bool { return r.service(t, "db").Initialized })
	q, err := Query(context.Background(), r.socket)
	if err != nil || !q.Healthy || !q.Services[0].Ready {
		t.Fatalf("after init: %+v, %v; want healthy", q, err)
	}
	data, _ := os.ReadFile(marks)
	if got := strings.Count(string(data), "run"); got != 2 {
		t.Errorf("init ran %d times, want 2 (one failure, one success)", got)
	}
}

// TestCapLogs cuts a log a daemon writes itself to its last bytes, keeps
// them beside it, leaves the agent's own logs and small logs alone, and the
// daemon's next append lands at the start of the emptied file.
func TestCapLogs(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("old line\n", 200) + "the last line\n"
	for name, data := range map[string]string{"access.log": big, "small.log": "x\n", "own.log": big, "other.txt": big} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	daemon, err := os.OpenFile(filepath.Join(dir, "access.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer daemon.Close()
	var errs []error
	capOnce(dir, 100, map[string]bool{"own.log": true}, func(_ string, err error) { errs = append(errs, err) })
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	kept, _ := os.ReadFile(filepath.Join(dir, "access.log.1"))
	if len(kept) != 100 || !strings.HasSuffix(string(kept), "the last line\n") {
		t.Errorf("access.log.1 holds %q, want the last 100 bytes", kept)
	}
	daemon.WriteString("new line\n")
	if now, _ := os.ReadFile(filepath.Join(dir, "access.log")); string(now) != "new line\n" {
		t.Errorf("access.log after the cut and one append: %q", now)
	}
	for _, name := range []string{"small.log", "own.log", "other.txt"} {
		if _, err := os.Stat(filepath.Join(dir, name+".1")); err == nil {
			t.Errorf("%s was cut", name)
		}
	}
}
