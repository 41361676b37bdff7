package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reloadSignals maps the names service.Reload may use to signals.
var reloadSignals = map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}

// reload makes s's running daemon take its changed configs: its reload
// signal to the main process, then its reload command, then a wait until
// it accepts connections on its Ready addresses again. The daemon keeps
// running throughout; an error leaves it as it was after the step that
// failed.
func (a *agent) reload(ctx context.Context, s *daemon) error {
	r := s.spec.Reload
	if r == nil {
		return fmt.Errorf("service %s cannot reload; restart the node to apply its configs", s.spec.Name)
	}
	st := s.status()
	if st.State != StateRunning || st.PID == 0 {
		return fmt.Errorf("service %s is %s, not running; nothing to reload", s.spec.Name, st.State)
	}
	var before []int
	if r.Replaces {
		before = children(st.PID)
	}
	if r.Signal != "" {
		if err := syscall.Kill(st.PID, reloadSignals[r.Signal]); err != nil {
			return fmt.Errorf("reload %s: signal %s to pid %d: %w", s.spec.Name, r.Signal, st.PID, err)
		}
		s.out.notef("reload: sent %s to pid %d", r.Signal, st.PID)
	}
	if r.Socket != "" {
		reply, err := ask(ctx, r.Socket, r.Command)
		if err != nil {
			return fmt.Errorf("reload %s: %w", s.spec.Name, err)
		}
		s.out.notef("reload: sent %q to %s; reply %q", r.Command, r.Socket, strings.TrimSpace(reply))
	}
	if len(r.Argv) > 0 {
		if err := a.runReload(ctx, s); err != nil {
			return err
		}
	}
	if r.Replaces {
		if err := waitReplaced(ctx, st.PID, before); err != nil {
			return fmt.Errorf("reload %s: %w", s.spec.Name, err)
		}
		s.out.notef("reload: every process of the old configuration has exited")
	}
	// A reloading daemon may close its listeners for a moment (sshd
	// re-executes itself): ready means serving again.
	for {
		err := readyErr(s.spec.Ready)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reload %s: %w", s.spec.Name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.update(func(st *ServiceStatus) { st.Reloads++ })
	a.log.Info("reloaded", "service", s.spec.Name)
	return nil
}

// runReload runs s's reload command to completion. Its output goes to the
// service's log, and its last lines into the error when it fails.
func (a *agent) runReload(ctx context.Context, s *daemon) error {
	argv := s.spec.Reload.Argv
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("reload %s: %w", s.spec.Name, err)
	}
	defer pr.Close()
	p, err := a.procs.start(argv, pw)
	pw.Close()
	if err != nil {
		return fmt.Errorf("reload %s: %w", s.spec.Name, err)
	}
	s.out.notef("reload started pid %d: %q", p.pid, argv)
	var last []string
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.out.line(sc.Text())
			last = append(last, sc.Text())
			if len(last) > 5 {
				last = last[1:]
			}
		}
	}()
	ex, ok := a.wait(ctx, p)
	if !ok {
		return fmt.Errorf("reload %s: %w", s.spec.Name, ctx.Err())
	}
	// wait killed what was left of the group: the pipe reaches its end,
	// unless a process left it elsewhere holds it.
	select {
	case <-read:
	case <-time.After(time.Second):
		pr.Close()
		<-read
	}
	if ex.Code != 0 {
		return fmt.Errorf("reload %s: %q %s; its last output: %s", s.spec.Name, argv, ex, strings.Join(last, " | "))
	}
	s.out.notef("reload done")
	return nil
}

func (a *agent) handleReload(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("service")
	s := a.service(name)
	if s == nil {
		http.Error(w, fmt.Sprintf("no service %q", name), http.StatusNotFound)
		return
	}
	if err := a.reload(r.Context(), s); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// Reload asks the agent serving on socket to reload service's daemon with
// its changed configs, and waits until it serves again or ctx ends.
func Reload(ctx context.Context, socket, service string) error {
	v := url.Values{"service": {service}}
	_, err := do(ctx, socket, http.MethodPost, "/reload?"+v.Encode(), maxStatusReply)
	return err
}

// ask writes command and a newline to the unix socket at path, retrying
// the connection until ctx ends (the daemon may not listen yet), and
// returns the reply, read until the daemon closes the connection.
func ask(ctx context.Context, path, command string) (string, error) {
	for {
		c, err := dial(ctx, path)
		if err == nil {
			defer c.Close()
			if d, ok := ctx.Deadline(); ok {
				c.SetDeadline(d)
			}
			if _, err := io.WriteString(c, command+"\n"); err != nil {
				return "", fmt.Errorf("send %q to %s: %w", command, path, err)
			}
			reply, err := io.ReadAll(io.LimitReader(c, 64<<10))
			if err != nil {
				return "", fmt.Errorf("read the reply to %q from %s: %w", command, path, err)
			}
			return string(reply), nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("connect to %s: %w", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// children lists the pids whose parent is pid, from /proc.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parens.
		rest := string(data)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) >= 2 && f[0] != "Z" {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
				out = append(out, child)
			}
		}
	}
	return out
}

// waitReplaced waits until none of before is still a child of pid and
// some other child runs: the daemon serves with its new configuration
// only.
func waitReplaced(ctx context.Context, pid int, before []int) error {
	for {
		now := children(pid)
		old := slices.ContainsFunc(now, func(c int) bool { return slices.Contains(before, c) })
		fresh := slices.ContainsFunc(now, func(c int) bool { return !slices.Contains(before, c) })
		if !old && fresh {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("its old processes %v still run, or no new one started: %w", before, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
