// Package agent is the node agent, PID 1 of every node's container. It runs
// the node's daemons in the foreground, each in its own process group, and
// restarts them with backoff. It keeps their recent output and reaps orphans.
// It answers status and log queries on a unix socket, so that no node needs a
// management port. gokrazy's supervisor is the model.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/service"
)

// DontRestart is the exit code by which a service, or its setup, says that
// it must not be restarted (gokrazy's convention).
const DontRestart = 125

// Config is what Run supervises. Only Services is required.
type Config struct {
	// Node names the node in status replies. Default: the host name.
	Node string
	// Services are the daemons to run, usually from LoadServices.
	Services []service.Service
	// LogDir receives each service's output, and its setup's, in NAME.log.
	// Empty keeps only the in-memory ring of recent lines.
	LogDir string
	// MaxLogSize is the size at which NAME.log is renamed to NAME.log.1,
	// replacing the previous one. Default 10 MiB. Other *.log files in
	// LogDir, which daemons write themselves, are cut to their last
	// MaxLogSize bytes (kept in NAME.log.1) every 30 seconds.
	MaxLogSize int64
	// Socket is the path of the unix socket that serves status and logs.
	// Empty serves none.
	Socket string
	// Metrics is the address (host:port) that serves the node's metrics
	// in Prometheus's text format on GET /metrics. Empty serves none.
	Metrics string
	// Cgroup is where the node's cgroup v1 controllers are mounted, one
	// directory each (cpuacct, memory, pids, blkio), for the metrics.
	// Empty leaves the cgroup's metrics out.
	Cgroup string
	// Disk is a path on the node's own disk, whose use against its size
	// the metrics report. Empty leaves them out.
	Disk string
	// Logger receives the agent's own events. Default: discard.
	Logger *slog.Logger

	// MinBackoff is the delay before the first restart of a service that
	// exited, or the first retry of a failed setup. It doubles on every
	// further failure up to MaxBackoff, and is reset once a service has run
	// for StableAfter. Defaults 1s, 30s and 60s.
	MinBackoff, MaxBackoff, StableAfter time.Duration
	// Grace is how long a service has to exit after SIGTERM before its
	// process group gets SIGKILL. Default 10s.
	Grace time.Duration
	// ReapAll makes the agent reap every child, including orphans that the
	// kernel re-parents to it, and not only the processes it started. It is
	// implied when the agent is PID 1; set it also when the process is a
	// child subreaper. Nothing else in the process may then wait for
	// children, because the agent takes every exit status.
	ReapAll bool

	// started, when set, is called whenever a daemon (not a setup) starts,
	// with the time the agent records as its StartedAt. For tests.
	started func(name string, pid int, at time.Time)
}

func (c *Config) setDefaults() {
	if c.Node == "" {
		c.Node, _ = os.Hostname()
	}
	if c.MaxLogSize <= 0 {
		c.MaxLogSize = 10 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.StableAfter <= 0 {
		c.StableAfter = time.Minute
	}
	if c.Grace <= 0 {
		c.Grace = 10 * time.Second
	}
}

// LoadServices reads the services.json that render wrote for a node.
func LoadServices(path string) ([]service.Service, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load services: %w", err)
	}
	var svcs []service.Service
	if err := json.Unmarshal(data, &svcs); err != nil {
		return nil, fmt.Errorf("load services %s: %w", path, err)
	}
	if err := validate(svcs); err != nil {
		return nil, fmt.Errorf("load services %s: %w", path, err)
	}
	return svcs, nil
}

// serviceName is what a service may be called: its name becomes a file name.
var serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func validate(svcs []service.Service) error {
	var errs []error
	seen := map[string]bool{}
	for i, s := range svcs {
		switch {
		case !serviceName.MatchString(s.Name):
			errs = append(errs, fmt.Errorf("service %d: invalid name %q: use letters, digits, '.', '_' and '-'", i, s.Name))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("service %s: duplicate name", s.Name))
		case len(s.Argv) == 0 || s.Argv[0] == "":
			errs = append(errs, fmt.Errorf("service %s: empty argv", s.Name))
		case s.Creates != "" && len(s.Setup) == 0:
			errs = append(errs, fmt.Errorf("service %s: creates %s without a setup command", s.Name, s.Creates))
		case len(s.Setup) > 0 && s.Setup[0] == "":
			errs = append(errs, fmt.Errorf("service %s: empty setup command", s.Name))
		case s.Reload != nil && (s.Reload.Socket == "") != (s.Reload.Command == ""):
			errs = append(errs, fmt.Errorf("service %s: reload needs both a socket and a command, or neither", s.Name))
		case s.Reload != nil && s.Reload.Signal != "" && s.Reload.Socket != "":
			errs = append(errs, fmt.Errorf("service %s: reload by a signal or by a socket, not both", s.Name))
		case s.Reload != nil && s.Reload.Signal == "" && len(s.Reload.Argv) == 0 && s.Reload.Socket == "":
			errs = append(errs, fmt.Errorf("service %s: reload with neither a signal, a socket nor a command", s.Name))
		case s.Reload != nil && s.Reload.Signal != "" && reloadSignals[s.Reload.Signal] == 0:
			errs = append(errs, fmt.Errorf("service %s: reload signal %q: use one of %s", s.Name, s.Reload.Signal, strings.Join(slices.Sorted(maps.Keys(reloadSignals)), ", ")))
		case s.Reload != nil && len(s.Reload.Argv) > 0 && s.Reload.Argv[0] == "":
			errs = append(errs, fmt.Errorf("service %s: empty reload command", s.Name))
		case s.Stats != nil && !(s.Stats.Format == statsMemcached && s.Stats.Addr != "") && !(s.Stats.Format == statsPHPFPM && s.Stats.URL != ""):
			errs = append(errs, fmt.Errorf("service %s: stats %q: use %s with an addr or %s with a url", s.Name, s.Stats.Format, statsMemcached, statsPHPFPM))
		}
		seen[s.Name] = true
	}
	return errors.Join(errs...)
}

// agent is one Run's live state.
type agent struct {
	cfg      Config
	log      *slog.Logger
	procs    *launcher
	services []*daemon

	// lastStatus is the last status with its readiness probes, which a
	// scrape reuses while it is recent (see scrapeStatus).
	lastMu     sync.Mutex
	lastStatus *Status
	lastAt     time.Time
}

// Run supervises cfg.Services until ctx is done. Then it stops every
// service (SIGTERM to its process group, SIGKILL after cfg.Grace), closes
// the logs, removes the socket and returns. It returns an error only when
// it cannot start: invalid services, an unusable socket or log directory.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := validate(cfg.Services); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a := &agent{cfg: cfg, log: cfg.Logger}
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o750); err != nil {
			return fmt.Errorf("agent: create log dir: %w", err)
		}
	}
	for _, spec := range cfg.Services {
		out, err := newOutput(cfg.LogDir, spec.Name, cfg.MaxLogSize, a.log)
		if err != nil {
			a.closeOutputs()
			return fmt.Errorf("agent: %w", err)
		}
		a.services = append(a.services, &daemon{spec: spec, out: out, st: ServiceStatus{Name: spec.Name, State: StateStarting}})
	}
	defer a.closeOutputs()

	var srv *server
	if cfg.Socket != "" {
		var err error
		if srv, err = serve(cfg.Socket, a); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer srv.close()
	}

	reapAll := cfg.ReapAll || os.Getpid() == 1
	procs, err := newLauncher(reapAll, a.log)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer procs.close()
	a.procs = procs

	a.log.Info("agent started", "node", cfg.Node, "services", len(a.services), "reap_all", reapAll)
	var wg sync.WaitGroup
	if cfg.LogDir != "" {
		own := map[string]bool{}
		for _, s := range a.services {
			own[s.spec.Name+".log"] = true
		}
		wg.Go(func() {
			capLogs(ctx, cfg.LogDir, cfg.MaxLogSize, own, func(name string, err error) {
				a.log.Error("cap log", "log", name, "err", err)
			})
		})
	}
	if cfg.Metrics != "" {
		wg.Go(func() { a.serveMetrics(ctx, cfg.Metrics) })
	}
	for _, s := range a.services {
		wg.Go(func() { a.supervise(ctx, s) })
	}
	wg.Wait()
	a.log.Info("agent stopped", "node", cfg.Node)
	return nil
}

// closeOutputs gives the services' pipes a moment to drain, then closes
// them and the log files.
func (a *agent) closeOutputs() {
	deadline := time.Now().Add(time.Second)
	for _, s := range a.services {
		s.out.close(time.Until(deadline))
	}
}

// daemon is one supervised service: what it should run, and how it is doing.
type daemon struct {
	spec service.Service
	out  *output

	mu sync.Mutex
	st ServiceStatus
}

func (s *daemon) update(f func(st *ServiceStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.st)
}

func (s *daemon) status() ServiceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	if st.LastExit != nil {
		e := *st.LastExit
		st.LastExit = &e
	}
	return st
}

// supervise runs one service until ctx is done: its setup until that
// succeeds, then the daemon, restarted with backoff whenever it exits.
func (a *agent) supervise(ctx context.Context, s *daemon) {
	log := a.log.With("service", s.spec.Name)
	b := backoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff, stable: a.cfg.StableAfter}
	// wait sleeps d; false means ctx is done.
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	defer s.update(func(st *ServiceStatus) { st.State, st.PID = StateStopped, 0 })

	setupDone := len(s.spec.Setup) == 0
	if !setupDone && s.spec.Creates != "" {
		if _, err := os.Stat(s.spec.Creates); err == nil {
			setupDone = true
			s.out.notef("setup skipped: %s exists", s.spec.Creates)
		}
	}
	starts := 0
	for ctx.Err() == nil {
		if !setupDone {
			ex, err := a.runSetup(ctx, s)
			if ctx.Err() != nil {
				return
			}
			if err == nil && ex.Code == 0 {
				setupDone = true
				b.cur = 0 // the daemon's failures start their own backoff
				if s.spec.Creates != "" {
					if _, err := os.Stat(s.spec.Creates); err != nil {
						s.out.notef("setup succeeded but did not create %s", s.spec.Creates)
						log.Warn("setup did not create its file", "creates", s.spec.Creates)
					}
				}
			} else {
				dontRetry := err == nil && ex.Code == DontRestart
				if err == nil {
					err = fmt.Errorf("setup %s", ex)
				}
				s.update(func(st *ServiceStatus) { st.State, st.PID, st.Error = StateFailed, 0, err.Error() })
				if dontRetry {
					s.out.notef("%v: not retrying", err)
					log.Warn("setup failed, not retrying", "err", err)
					return
				}
				d := b.next(0)
				s.out.notef("%v; retrying in %v", err, d)
				log.Warn("setup failed", "err", err, "retry_in", d)
				if !wait(d) {
					return
				}
				continue
			}
		}

		w, err := s.out.pipe()
		var p *proc
		if err == nil {
			p, err = a.procs.start(s.spec.Argv, w)
			w.Close()
		}
		if err != nil {
			s.update(func(st *ServiceStatus) { st.State, st.PID, st.Error = StateFailed, 0, err.Error() })
			d := b.next(0)
			s.out.notef("%v; retrying in %v", err, d)
			log.Error("start failed", "err", err, "retry_in", d)
			if !wait(d) {
				return
			}
			continue
		}
		started := time.Now()
		starts++
		s.update(func(st *ServiceStatus) {
			st.State, st.PID, st.StartedAt, st.Restarts, st.Error = StateRunning, p.pid, started, starts-1, ""
		})
		if a.cfg.started != nil {
			a.cfg.started(s.spec.Name, p.pid, started)
		}
		s.out.notef("started pid %d: %q", p.pid, s.spec.Argv)
		log.Info("started", "pid", p.pid, "restarts", starts-1)

		initCtx, stopInit := context.WithCancel(ctx)
		initDone := make(chan struct{})
		go func() {
			defer close(initDone)
			a.runInit(initCtx, s)
		}()
		ex, ok := a.wait(ctx, p)
		stopInit()
		<-initDone
		if !ok {
			return // ctx is done and wait has stopped the group
		}
		s.update(func(st *ServiceStatus) { st.PID, st.LastExit = 0, &ex })
		ran := ex.At.Sub(started)
		if ex.Code == DontRestart {
			s.out.notef("%s after %v: not restarting", ex, ran.Round(time.Millisecond))
			log.Info("exited, not restarting", "exit", ex.String())
			return
		}
		d := b.next(ran)
		s.update(func(st *ServiceStatus) { st.State = StateBackoff })
		s.out.notef("%s after %v; restarting in %v", ex, ran.Round(time.Millisecond), d)
		log.Warn("exited", "exit", ex.String(), "ran", ran, "restart_in", d)
		if !wait(d) {
			return
		}
	}
}

// runInit runs s's Init command once the daemon accepts connections on its
// Ready addresses, retrying every second until it succeeds or ctx (this
// start of the daemon) ends. Until then the service is not ready.
func (a *agent) runInit(ctx context.Context, s *daemon) {
	s.update(func(st *ServiceStatus) { st.Initialized = len(s.spec.Init) == 0 })
	if len(s.spec.Init) == 0 {
		return
	}
	for ctx.Err() == nil {
		if readyErr(s.spec.Ready) == nil {
			w, err := s.out.pipe()
			var p *proc
			if err == nil {
				p, err = a.procs.start(s.spec.Init, w)
				w.Close()
			}
			if err == nil {
				s.out.notef("init started pid %d: %q", p.pid, s.spec.Init)
				ex, ok := a.wait(ctx, p)
				if !ok {
					return
				}
				if ex.Code == 0 {
					s.out.notef("init done")
					s.update(func(st *ServiceStatus) { st.Initialized = true })
					return
				}
				err = fmt.Errorf("init %s", ex)
			}
			s.out.notef("%v; retrying in 1s", err)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runSetup runs s's setup command to completion, or until ctx is done.
func (a *agent) runSetup(ctx context.Context, s *daemon) (Exit, error) {
	w, err := s.out.pipe()
	if err != nil {
		return Exit{}, err
	}
	p, err := a.procs.start(s.spec.Setup, w)
	w.Close()
	if err != nil {
		return Exit{}, fmt.Errorf("setup: %w", err)
	}
	s.update(func(st *ServiceStatus) { st.State, st.PID, st.Error = StateSetup, p.pid, "" })
	s.out.notef("setup started pid %d: %q", p.pid, s.spec.Setup)
	a.log.Info("setup started", "service", s.spec.Name, "pid", p.pid)
	ex, ok := a.wait(ctx, p)
	if !ok {
		return Exit{}, ctx.Err()
	}
	s.out.notef("setup %s", ex)
	return ex, nil
}

// wait waits for p to exit, then kills whatever is left of its process
// group. When ctx is done first, it stops p's group and reports false.
func (a *agent) wait(ctx context.Context, p *proc) (Exit, bool) {
	select {
	case ws := <-p.exited:
		ex := exitOf(ws, time.Now())
		// A daemon's leftover children (workers, a forgotten background
		// job) would hold its ports and files against the next start.
		if err := signalGroup(p.pid, syscall.SIGKILL); err != nil {
			a.log.Warn("kill leftovers", "pgid", p.pid, "err", err)
		}
		return ex, true
	case <-ctx.Done():
		a.stop(p)
		return Exit{}, false
	}
}

// stop ends p's process group: SIGTERM, then SIGKILL to whatever is left
// after the grace period.
func (a *agent) stop(p *proc) {
	log := a.log.With("pgid", p.pid)
	if err := signalGroup(p.pid, syscall.SIGTERM); err != nil {
		log.Warn("stop", "err", err)
	}
	grace := time.NewTimer(a.cfg.Grace)
	defer grace.Stop()
	exited := false
	select {
	case <-p.exited:
		exited = true
		// The leader is gone; give the rest of its group the remaining
		// grace period.
		waitGroupGone(p.pid, grace.C)
	case <-grace.C:
	}
	if groupAlive(p.pid) {
		log.Warn("grace period over, killing process group")
		if err := signalGroup(p.pid, syscall.SIGKILL); err != nil {
			log.Warn("kill", "err", err)
		}
	}
	// SIGKILL cannot be caught, so this is quick unless a process is stuck
	// in the kernel; don't hang shutdown on one.
	bound := time.NewTimer(killWait)
	defer bound.Stop()
	if !exited {
		select {
		case <-p.exited:
		case <-bound.C:
			log.Error("process did not exit after SIGKILL", "pid", p.pid)
			return
		}
	}
	waitGroupGone(p.pid, bound.C)
}

// killWait bounds the wait for processes to disappear after SIGKILL.
const killWait = 5 * time.Second

// waitGroupGone polls until process group pgid is empty or until done.
func waitGroupGone(pgid int, done <-chan time.Time) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for groupAlive(pgid) {
		select {
		case <-tick.C:
		case <-done:
			return
		}
	}
}

// backoff is the delay before a service's next start: min, doubling on
// every failure up to max, and back to min once the service has run for
// stable.
type backoff struct {
	min, max, stable time.Duration
	cur              time.Duration
}

// next returns the delay after an attempt that ran for ran (0 if it never
// started) and advances.
func (b *backoff) next(ran time.Duration) time.Duration {
	if b.cur == 0 || (b.stable > 0 && ran >= b.stable) {
		b.cur = b.min
	}
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}
