package agent

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
	"github.com/bulkhead/bulkhead/internal/service"
)

// TestReload: a reload signals the running daemon, which stays the same
// process, then runs the reload command; a service without a reload, one
// whose command fails, and an unknown one each get an error that says so.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	hups := filepath.Join(dir, "hups")
	ran := filepath.Join(dir, "ran")
	// The daemon counts the HUPs it gets; it must survive them.
	daemon := `trap 'echo hup >> "$1"' HUP; : > "$1"; while :; do sleep 0.05; done`
	r := start(t, Config{Services: []service.Service{
		{Name: "web", Argv: []string{"sh", "-c", daemon, "sh", hups},
			Reload: &service.Reload{Signal: "HUP", Argv: []string{"sh", "-c", `echo ok >> "$1"`, "sh", ran}}},
		{Name: "plain", Argv: sh("sleep 1000")},
		{Name: "broken", Argv: sh("sleep 1000"), Reload: &service.Reload{Argv: sh("echo cannot apply; exit 3")}},
	}})
	hosttest.Eventually(t, patience, "all running, web's trap set", func() bool {
		_, err := os.Stat(hups)
		return err == nil && r.service(t, "web").State == StateRunning && r.service(t, "plain").State == StateRunning && r.service(t, "broken").State == StateRunning
	})
	pid := r.service(t, "web").PID
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	// Signals coalesce: wait for each HUP before sending the next.
	for i := 1; i <= 2; i++ {
		if err := Reload(ctx, r.socket, "web"); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		hosttest.Eventually(t, patience, "HUP handled", func() bool {
			data, _ := os.ReadFile(hups)
			return strings.Count(string(data), "hup") == i
		})
	}
	if data, _ := os.ReadFile(ran); strings.Count(string(data), "ok") != 2 {
		t.Errorf("reload command ran %q, want twice", data)
	}
	st := r.service(t, "web")
	if st.PID != pid || st.Restarts != 0 || st.Reloads != 2 {
		t.Errorf("after two reloads: pid %d (was %d), restarts %d, reloads %d; want the same process, 0 restarts, 2 reloads", st.PID, pid, st.Restarts, st.Reloads)
	}

	if err := Reload(ctx, r.socket, "plain"); err == nil || !strings.Contains(err.Error(), "cannot reload; restart the node") {
		t.Errorf("reload of a service without one: %v", err)
	}
	if err := Reload(ctx, r.socket, "broken"); err == nil || !strings.Contains(err.Error(), "exited with code 3") || !strings.Contains(err.Error(), "cannot apply") {
		t.Errorf("failing reload command: %v; want its exit and output", err)
	}
	if err := Reload(ctx, r.socket, "nope"); err == nil || !strings.Contains(err.Error(), `no service "nope"`) {
		t.Errorf("unknown service: %v", err)
	}
	if st := r.service(t, "broken"); st.State != StateRunning || st.Reloads != 0 {
		t.Errorf("after a failed reload: %+v; want still running, no reload counted", st)
	}
}

// TestReloadValidate refuses reloads that could do nothing, or harm.
func TestReloadValidate(t *testing.T) {
	for _, tc := range []struct {
		r    *service.Reload
		want string
	}{
		{&service.Reload{}, "neither a signal, a socket nor a command"},
		{&service.Reload{Signal: "KILL"}, `reload signal "KILL"`},
		{&service.Reload{Argv: []string{""}}, "empty reload command"},
	} {
		err := validate([]service.Service{{Name: "s", Argv: []string{"true"}, Reload: tc.r}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate reload %+v: %v; want %q", tc.r, err, tc.want)
		}
	}
}

// TestReloadBySocket: the command goes to the daemon's socket, even one
// that appears only after the reload was asked for, and the reload ends
// when the daemon hangs up.
func TestReloadBySocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "master.sock")
	r := start(t, Config{Services: []service.Service{
		{Name: "lb", Argv: sh("sleep 1000"), Reload: &service.Reload{Socket: sock, Command: "reload"}},
	}})
	hosttest.Eventually(t, patience, "lb running", func() bool { return r.service(t, "lb").State == StateRunning })
	got := make(chan string, 1)
	go func() {
		time.Sleep(200 * time.Millisecond) // the daemon is not listening yet
		l, err := net.Listen("unix", sock)
		if err != nil {
			got <- err.Error()
			return
		}
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("done\n"))
		c.Close()
		got <- line
	}()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := Reload(ctx, r.socket, "lb"); err != nil {
		t.Fatal(err)
	}
	if line := <-got; line != "reload\n" {
		t.Errorf("the daemon's socket got %q, want the command", line)
	}
	if st := r.service(t, "lb"); st.Reloads != 1 {
		t.Errorf("reloads = %d, want 1", st.Reloads)
	}
	if !slices.ContainsFunc(r.logs("lb"), func(l string) bool { return strings.Contains(l, `reply "done"`) }) {
		t.Errorf("the log lacks the daemon's reply: %q", r.logs("lb"))
	}
}

// TestReloadWaitsForNewWorkers: a daemon that reloads by starting a new
// worker and retiring the old one later is reloaded only once the old one
// has exited and the new one runs.
func TestReloadWaitsForNewWorkers(t *testing.T) {
	retired := filepath.Join(t.TempDir(), "retired")
	// On HUP: a new worker at once; the old one finishes 300ms later.
	daemon := `sleep 1000 & w=$!
trap 'old=$w; sleep 1000 & w=$!; (sleep 0.3; echo $old > "$1"; kill $old) & ' HUP
while :; do sleep 0.05; done`
	r := start(t, Config{Services: []service.Service{
		{Name: "web", Argv: []string{"sh", "-c", daemon, "sh", retired}, Reload: &service.Reload{Signal: "HUP", Replaces: true}},
	}})
	hosttest.Eventually(t, patience, "web running with its worker", func() bool {
		st := r.service(t, "web")
		return st.State == StateRunning && len(children(st.PID)) > 0
	})
	pid := r.service(t, "web").PID
	old := children(pid)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := Reload(ctx, r.socket, "web"); err != nil {
		t.Fatal(err)
	}
	// Reload returned: the old worker is gone, as the daemon says.
	if _, err := os.Stat(retired); err != nil {
		t.Errorf("reload returned before the old worker was retired")
	}
	now := children(pid)
	if slices.ContainsFunc(now, func(c int) bool { return slices.Contains(old, c) }) {
		t.Errorf("after reload the old workers %v still run among %v", old, now)
	}
}
