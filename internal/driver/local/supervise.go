package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/durable"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/runc"
	"github.com/bulkhead/bulkhead/internal/spec"
	"github.com/bulkhead/bulkhead/internal/sshfs"
)

// SuperviseOptions are how a supervisor was started.
type SuperviseOptions struct {
	// Pair links the supervisor to its keeper (see pair.go); nil for a
	// supervisor of its own.
	Pair *PairLink
	// Restarted says the supervisor replaces one that died: it goes on
	// with the nodes' restart counts that one left, where a supervisor up
	// starts counts afresh.
	Restarted bool
}

// Supervise keeps a running stack converged to its saved plan until ctx is
// done: it keeps the site mounts of static and app nodes alive, and
// restarts a node whose container died. With a keeper it also starts a
// new keeper whenever that one dies. It listens on nothing: the published
// ports are the kernel's (see publish.go).
func (d *Driver) Supervise(ctx context.Context, stack string, o SuperviseOptions) error {
	ps := d.paths(stack)
	if o.Pair != nil {
		me, err := self(KindProcess)
		if err != nil {
			return err
		}
		// With the caller's ctx, which only a stop on purpose ends: an
		// error return must look like a death to the keeper, which then
		// starts another supervisor.
		kept := make(chan struct{})
		go func() {
			defer close(kept)
			d.keepPeer(ctx, stack, me, o.Pair, d.logger().With("stack", stack, "supervisor", me.Name))
		}()
		// The keeper hears of a stop on purpose before this process ends.
		defer func() {
			if ctx.Err() != nil {
				<-kept
			}
		}()
	}
	data, err := os.ReadFile(ps.plan())
	if err != nil {
		return fmt.Errorf("stack %s has no saved plan: %w", stack, err)
	}
	p, err := plan.Decode(data)
	if err != nil {
		return err
	}
	log := d.logger().With("stack", stack)
	log.Info("supervisor started", "pid", os.Getpid(), "nodes", len(p.Nodes))
	if err := d.keepPublished(ctx, p); err != nil {
		log.Error("publish the ports in the kernel; run 'bulkhead up'", "err", err)
	}
	j, err := loadJournal(ps.journal(), stack)
	if err != nil {
		return err
	}
	mounts := &siteMounter{ctx: ctx, run: sshfs.Run, log: log, running: map[string]context.CancelFunc{}}
	mounts.reconcile(d.siteMounts(p, j))
	defer mounts.wait()
	if err := durable.Write(ps.supervised(), []byte(digest(data)), 0o600); err != nil {
		return err
	}
	// HUP: up saved a new plan. Re-read it: new nodes' sites get
	// mounted and removed nodes' unmounted, while every other mount goes
	// on.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// Each supervisor up starts counts restarts afresh: up starts one
	// after every change that could have fixed a crashing node. One that
	// replaces a supervisor that died goes on from its counts.
	w := &watch{known: map[string]Object{}, state: &supervisorState{Nodes: map[string]*restarts{}}}
	if o.Restarted {
		if st, err := loadSupervisorState(ps.supervisorState()); err == nil {
			w.state = st
		}
	}
	if err := w.state.save(ps.supervisorState()); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("supervisor stopped")
			return nil
		case <-hup:
			np, j, sum, err := d.reloadPlan(stack, p)
			if err != nil {
				log.Error("reload the plan; keeping the one running", "err", err)
				continue
			}
			p = np
			w.known = map[string]Object{}
			mounts.reconcile(d.siteMounts(p, j))
			if err := durable.Write(ps.supervised(), []byte(sum), 0o600); err != nil {
				log.Error("say which plan runs", "err", err)
			}
			log.Info("plan reloaded", "nodes", len(p.Nodes))
		case <-tick.C:
			d.repair(ctx, p, w)
		}
	}
}

// watch remembers each container's first process (pid and start time), so
// that a round of repair reads /proc instead of running runc once per node
// every second: on a stack of 7 nodes those runc processes cost a quarter
// of a core (measured 2026-11 with bench/dataplane.sh).
type watch struct {
	known map[string]Object // container -> its PID 1, as a process Object
	state *supervisorState  // restarts by node, for the backoff and status
}

// running returns those of nodes whose containers run. A container whose
// PID 1 it knew of is still there runs; of the others it asks runc: with
// one runc list when more than one is in doubt (a supervisor starting, or
// re-reading the plan after an up, knows none, and at 100 app nodes a runc
// state for each was a hundred Go programs starting, most of a core for
// seconds), else, or when the list fails (it does when any container on
// the host goes away while it reads), with runc state.
func (w *watch) running(ctx context.Context, nodes []plan.Node) map[string]bool {
	out := map[string]bool{}
	var doubt []string
	for i := range nodes {
		id := nodes[i].Container
		if o, ok := w.known[id]; ok && alive(o) {
			out[id] = true
			continue
		}
		delete(w.known, id)
		doubt = append(doubt, id)
	}
	var listed map[string]runc.Status
	if len(doubt) > 1 {
		if list, err := runc.List(ctx); err == nil {
			listed = make(map[string]runc.Status, len(list))
			for _, st := range list {
				listed[st.ID] = st
			}
		}
	}
	for _, id := range doubt {
		st, ok := listed[id]
		if listed == nil {
			var err error
			st, err = runc.State(ctx, id)
			ok = err == nil
		}
		if !ok || st.Status != "running" {
			continue
		}
		out[id] = true
		if start, err := procStart(st.Pid); err == nil {
			w.known[id] = Object{Kind: KindProcess, Name: strconv.Itoa(st.Pid), Detail: start}
		}
	}
	return out
}

// repair restarts the containers of nodes that stopped. It waits for no
// lock: while an up or down holds the stack, it skips this round.
func (d *Driver) repair(ctx context.Context, p *plan.Plan, w *watch) {
	var dead []*plan.Node
	running := w.running(ctx, p.Nodes)
	for i := range p.Nodes {
		if n := &p.Nodes[i]; !running[n.Container] {
			dead = append(dead, n)
		}
	}
	if len(dead) == 0 {
		return
	}
	unlock, err := d.lockStack(ctx, p.Stack, false)
	if err != nil {
		return
	}
	defer unlock()
	j, err := loadJournal(d.paths(p.Stack).journal(), p.Stack)
	if err != nil {
		d.logger().Error("read journal", "err", err)
		return
	}
	now := time.Now()
	changed := false
	for _, n := range dead {
		if !j.has(Object{Kind: KindContainer, Name: n.Container}) {
			continue // never started by up, or removed by down
		}
		r := w.state.Nodes[n.Name]
		r.died(now)
		if !r.due(now) {
			continue
		}
		if r == nil {
			r = &restarts{}
			w.state.Nodes[n.Name] = r
		}
		r.started(now)
		changed = true
		if r.CrashLoop {
			d.logger().Error("node is in a crash loop; retrying less often", "node", n.Name, "quick_deaths", r.Quick, "next_try", r.Next.Format(time.RFC3339))
		} else {
			d.logger().Warn("node container is not running; restarting it", "node", n.Name, "restarts", r.Count)
		}
		if err := d.startContainer(ctx, p, n, j); err != nil {
			d.logger().Error("restart node", "node", n.Name, "err", err)
		}
	}
	if changed {
		if err := w.state.save(d.paths(p.Stack).supervisorState()); err != nil {
			d.logger().Error("save restart state", "err", err)
		}
	}
}

// reloadPlan reads the stack's saved plan and journal again.
func (d *Driver) reloadPlan(stack string, cur *plan.Plan) (*plan.Plan, *journal, string, error) {
	ps := d.paths(stack)
	data, err := os.ReadFile(ps.plan())
	if err != nil {
		return nil, nil, "", err
	}
	p, err := plan.Decode(data)
	if err != nil {
		return nil, nil, "", err
	}
	j, err := loadJournal(ps.journal(), stack)
	if err != nil {
		return nil, nil, "", err
	}
	return p, j, digest(data), nil
}

// digest is the hex SHA-256 of data.
func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// siteMounter keeps each static and app node's site mounted from storage,
// over SFTP from inside the node's own network namespace: static read-only
// as site-ro, app read-write as site-rw (the storage node's file ownership
// confines writes to the writable paths). Each mount has its own
// goroutine, so that one can be added or removed while the rest go on.
type siteMounter struct {
	ctx     context.Context
	run     func(context.Context, sshfs.Mount, *slog.Logger) error
	log     *slog.Logger
	wg      sync.WaitGroup
	running map[string]context.CancelFunc // by target
	mounts  map[string]sshfs.Mount
	done    map[string]chan struct{} // closed when the mount's goroutine ends
}

// reconcile starts the mounts in want that do not run, or run with other
// settings, and stops those not in want, waiting for each to unmount.
func (m *siteMounter) reconcile(want []sshfs.Mount) {
	if m.mounts == nil {
		m.mounts, m.done = map[string]sshfs.Mount{}, map[string]chan struct{}{}
	}
	keep := map[string]bool{}
	for _, w := range want {
		if old, ok := m.mounts[w.Target]; ok && old == w {
			keep[w.Target] = true
		}
	}
	for target, stop := range m.running {
		if keep[target] {
			continue
		}
		stop()
		<-m.done[target]
		delete(m.running, target)
		delete(m.mounts, target)
		delete(m.done, target)
	}
	for _, w := range want {
		if keep[w.Target] {
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		done := make(chan struct{})
		m.running[w.Target] = cancel
		m.mounts[w.Target] = w
		m.done[w.Target] = done
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(done)
			log := m.log.With("mount", w.Target)
			if err := m.run(ctx, w, log); err != nil {
				log.Error("site mount failed", "err", err)
			}
		}()
	}
}

// wait waits for every mount's goroutine to end (the context is done).
func (m *siteMounter) wait() { m.wg.Wait() }

// siteMounts lists the site mounts of p's nodes, as the plan gives them.
// Files show as owned by www-data of the node's user namespace, as the
// host maps it.
func (d *Driver) siteMounts(p *plan.Plan, j *journal) []sshfs.Mount {
	if p.Storage != spec.ProtocolSFTP {
		return nil
	}
	ps := d.paths(p.Stack)
	var out []sshfs.Mount
	for _, n := range p.Nodes {
		m := n.Mount
		if m == nil {
			continue
		}
		owner := hostID(j.nodeIDs(n.Name), siteOwner)
		out = append(out, sshfs.Mount{
			Netns: n.Netns, Target: ps.node(n.Name).shared(), Stage: ps.node(n.Name).stage(),
			User: m.Account, Host: m.Addr.String(), Port: m.Port.Number, Remote: "/",
			Identity: filepath.Join(ps.secrets(), n.Name+".key"), KnownHosts: filepath.Join(ps.secrets(), "known_hosts"),
			ReadOnly: m.ReadOnly, UID: owner, GID: owner,
		})
	}
	return out
}
