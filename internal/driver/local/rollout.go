package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
	"github.com/bulkhead/bulkhead/internal/verify"
)

// releasesDir is where a site node finds every release of the stack,
// read-only; its configuration names the one it serves.
const releasesDir = "/srv/releases"

// releaseStore is p's store of releases on the host.
func (d *Driver) releaseStore(p *plan.Plan) *release.Store {
	ps := d.paths(p.Stack)
	return &release.Store{Dir: ps.releases(), Meta: ps.releaseMeta(), Shared: render.DefaultLayout().Shared, Writable: p.Site.Writable}
}

// nodeLayout is the layout n runs with: a node that serves the site reads
// the release idx gives it, or the live one.
func nodeLayout(n *plan.Node, idx *release.Index) render.Layout {
	l := render.DefaultLayout()
	if n.Mount == nil || idx == nil {
		return l
	}
	id := idx.Nodes[n.Name]
	if id == "" {
		id = idx.Live
	}
	if id != "" {
		l.Site, l.Release = path.Join(releasesDir, id), true
	}
	return l
}

// renderAll renders every node of p (see renderNodes).
func renderAll(p *plan.Plan, rs render.Secrets, idx *release.Index, out map[string]bool) ([]render.Node, error) {
	nodes := make([]render.Node, 0, len(p.Nodes))
	for i := range p.Nodes {
		n, err := render.RenderNode(p, &p.Nodes[i], render.Input{Layout: nodeLayout(&p.Nodes[i], idx), Secrets: rs, Out: out})
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// siteRelease checks the site's code and makes its release, before
// anything on the host changes. It returns the store's index and the
// release to roll out: none when the site is the code last deployed from
// it (so a rollback holds until the site changes). On a stack's first up
// the release is live at once: nothing serves yet.
func (d *Driver) siteRelease(ctx context.Context, p *plan.Plan, site string) (*release.Index, string, error) {
	store := d.releaseStore(p)
	idx, err := store.Load()
	if err != nil {
		return nil, "", err
	}
	last, err := store.LoadManifest(idx.Source)
	if err != nil {
		return nil, "", err
	}
	if err := d.lintSite(ctx, p, site, last); err != nil {
		return nil, "", err
	}
	r, fresh, err := store.Build(site, time.Now())
	if err != nil {
		return nil, "", err
	}
	if fresh {
		d.progress("release %s: built from %s (%d files, %d KiB)", r.ID, site, r.Files, r.Bytes>>10)
	}
	if idx, err = store.Load(); err != nil {
		return nil, "", err
	}
	if idx.Live == "" {
		idx.SetState(r.ID, release.Live, "")
		idx.Source, idx.Nodes = r.ID, nil
		return idx, "", store.Save(idx)
	}
	if r.ID == idx.Source {
		return idx, "", nil
	}
	return idx, r.ID, nil
}

// rollout moves the stack's site nodes to release target, one app node at
// a time, never with fewer app nodes serving than before:
//
//  1. a surge node (o.Surge's extra app node) joins with target, and
//     gets requests only once the site answers on it (siteCheck);
//  2. the static nodes switch to target;
//  3. each app node leaves the edge's pool, finishes what it serves,
//     switches to target, passes siteCheck and the re-verify gate (verify
//     on its rows and columns), and rejoins;
//  4. the surge node leaves as a scale-down does: drained, then removed.
//
// A failed check or gate rolls every node back to the live release, in
// the same way, and marks target failed: a failing release never gets a
// visitor's request. fromSite says whether target is the site's code (a
// deploy) rather than an older release (a rollback).
func (d *Driver) rollout(ctx context.Context, p *plan.Plan, o UpOptions, j *journal, target string, fromSite bool, res *UpResult) error {
	store := d.releaseStore(p)
	idx, err := store.Load()
	if err != nil {
		return err
	}
	from := idx.Live
	start := time.Now()
	verb := "deploy"
	if !fromSite {
		verb = "rollback"
	}
	d.progress("%s: release %s replaces %s, one app node at a time", verb, target, from)
	r := &roller{d: d, p: p, o: o, j: j, res: res, store: store, out: map[string]bool{}, verb: verb}
	err = r.run(ctx, target)
	if err == nil {
		if idx, err = store.Load(); err != nil {
			return err
		}
		idx.SetState(target, release.Live, "")
		idx.Nodes = nil
		if fromSite {
			idx.Source = target
		}
		if err := store.Save(idx); err != nil {
			return err
		}
		removed, err := store.Prune(idx, release.Keep)
		if err != nil {
			return err
		}
		d.progress("%s: release %s live on every node in %v%s", verb, target, time.Since(start).Round(100*time.Millisecond), prunedNote(removed))
		res.Release = target
		return nil
	}
	d.progress("%s: release %s failed: %v", verb, target, err)
	d.progress("%s: rolling back to %s", verb, from)
	// With a context of our own: the caller's may be what failed.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	back := r.back(cctx, from)
	if idx, lerr := store.Load(); lerr == nil {
		idx.SetState(target, release.Failed, err.Error())
		if back == nil {
			idx.Nodes = nil
		}
		back = errors.Join(back, store.Save(idx))
	} else {
		back = errors.Join(back, lerr)
	}
	if back != nil {
		return fmt.Errorf("release %s failed (%w), and the rollback to %s failed too: %v; run 'bulkhead rollback %s'", target, err, from, back, from)
	}
	return fmt.Errorf("release %s failed, so every node went back to %s, and the failed release served no request:\n  %w", target, from, err)
}

func prunedNote(removed []string) string {
	if len(removed) == 0 {
		return ""
	}
	return fmt.Sprintf("; removed old releases %s", strings.Join(removed, ", "))
}

// roller is one rollout's state.
type roller struct {
	d     *Driver
	p     *plan.Plan
	o     UpOptions
	j     *journal
	res   *UpResult
	store *release.Store
	out   map[string]bool // app nodes out of the edge's pool
	surge *plan.Plan      // while its node is up
	moved []*plan.Node    // site nodes switched, in order
	stale bool            // the edge's pool still leaves out a node that passed
	verb  string          // deploy or rollback, for progress
}

// run is steps 1 to 4 of rollout.
func (r *roller) run(ctx context.Context, target string) error {
	if s := r.o.Surge; s != nil {
		var extra []*plan.Node
		for i := range s.Nodes {
			if r.p.Node(s.Nodes[i].Name) == nil {
				extra = append(extra, &s.Nodes[i])
			}
		}
		if len(extra) > 0 {
			for _, n := range extra {
				if err := r.assign(n.Name, target); err != nil {
					return err
				}
				r.d.progress("%s: %s joins with release %s", r.verb, n.Name, target)
			}
			r.surge = s
			if err := r.d.enter(ctx, "rollout:surge"); err != nil {
				return err
			}
			if err := r.applyPlan(ctx, s); err != nil {
				return err
			}
		}
	}
	front := r.d.runningFront(ctx, r.p)
	for _, n := range r.p.Role(spec.RoleStatic) {
		if err := r.d.enter(ctx, "rollout:static"); err != nil {
			return err
		}
		if err := r.switchNode(ctx, front, n, target, false); err != nil {
			return err
		}
	}
	for _, n := range r.p.Role(spec.RoleApp) {
		if err := r.d.enter(ctx, "rollout:"+n.Name); err != nil {
			return err
		}
		if err := r.switchNode(ctx, front, n, target, true); err != nil {
			return err
		}
	}
	if err := r.rejoin(ctx); err != nil {
		return err
	}
	if r.surge != nil {
		r.surge = nil
		if err := r.d.enter(ctx, "rollout:leave"); err != nil {
			return err
		}
		r.d.progress("%s: the surge node leaves", r.verb)
		return r.applyPlan(ctx, r.p)
	}
	return nil
}

// back switches every moved node to release id, in reverse order, and
// removes the surge node.
func (r *roller) back(ctx context.Context, id string) error {
	front := r.d.runningFront(ctx, r.p)
	var errs []error
	for _, n := range slices.Backward(r.moved) {
		if err := r.switchNode(ctx, front, n, id, n.Role == spec.RoleApp); err != nil {
			errs = append(errs, err)
		}
	}
	if len(r.out) > 0 {
		// A node that failed its check, switched back and passed: it
		// is out no longer.
		errs = append(errs, r.front(ctx, front))
	} else {
		errs = append(errs, r.rejoin(ctx))
	}
	if r.surge != nil || r.o.Surge != nil {
		// Also when the surge failed half way: the plan applied last may
		// be the surge's.
		errs = append(errs, r.applyPlan(ctx, r.p))
	}
	return errors.Join(errs...)
}

// assign records that node runs release id.
func (r *roller) assign(node, id string) error {
	idx, err := r.store.Load()
	if err != nil {
		return err
	}
	if idx.Nodes == nil {
		idx.Nodes = map[string]string{}
	}
	idx.Nodes[node] = id
	return r.store.Save(idx)
}

// applyPlan makes the host run p as up does, with the releases the index
// gives each node.
func (r *roller) applyPlan(ctx context.Context, p *plan.Plan) error {
	idx, err := r.store.Load()
	if err != nil {
		return err
	}
	rendered, _, err := r.d.renderNodes(p, r.o.SiteDir, idx, nil)
	if err != nil {
		return err
	}
	return r.d.apply(ctx, p, r.o, r.j, rendered, r.res)
}

// switchNode moves n to release id. An app node (pool) first leaves the
// edge's pool and drains, and rejoins only once the site answers on it
// and the gate passes.
func (r *roller) switchNode(ctx context.Context, front, n *plan.Node, id string, pool bool) error {
	d, p := r.d, r.p
	if pool && front != nil {
		// The node before it rejoins in the same reload.
		r.out[n.Name] = true
		if err := r.front(ctx, front); err != nil {
			return err
		}
		d.drain(ctx, []*plan.Node{n}, r.o.Drain)
	}
	if err := r.assign(n.Name, id); err != nil {
		return err
	}
	if !slices.Contains(r.moved, n) {
		r.moved = append(r.moved, n)
	}
	idx, err := r.store.Load()
	if err != nil {
		return err
	}
	rendered, _, err := d.renderNodes(p, r.o.SiteDir, idx, r.out)
	if err != nil {
		return err
	}
	var files render.Node
	for _, x := range rendered {
		if x.Name == n.Name {
			files = x
		}
	}
	if err := d.applyNode(ctx, p, n, files, r.j, r.res); err != nil {
		return err
	}
	if err := d.waitHealthy(ctx, p, r.j, r.o.Wait); err != nil {
		return err
	}
	if !pool || front == nil {
		return nil
	}
	if err := d.siteCheck(ctx, p, front, n, r.o.Wait); err != nil {
		return err
	}
	if err := d.gate(ctx, p, r.j, n); err != nil {
		return err
	}
	// It rejoins with the next node's leaving, or at the end (rejoin).
	delete(r.out, n.Name)
	r.stale = true
	return nil
}

// rejoin reloads the edge if a node's return to the pool waits for it.
func (r *roller) rejoin(ctx context.Context) error {
	front := r.d.runningFront(ctx, r.p)
	if !r.stale || front == nil {
		return nil
	}
	return r.front(ctx, front)
}

// front rewrites the edge's pool, leaving out r.out.
func (r *roller) front(ctx context.Context, front *plan.Node) error {
	r.stale = false
	idx, err := r.store.Load()
	if err != nil {
		return err
	}
	rendered, _, err := r.d.renderNodes(r.p, r.o.SiteDir, idx, r.out)
	if err != nil {
		return err
	}
	byName := map[string]render.Node{}
	for _, x := range rendered {
		byName[x.Name] = x
	}
	return r.d.updateFront(ctx, r.p, front, byName, r.j, r.res)
}

// siteCheck asks app node n, from the front's network namespace as the
// edge would, for the site's check path and for /, and wants 2xx from
// both. A node that does not answer yet, or answers 502, 503 or 504 (its
// web server up, PHP not yet), gets until limit (at most 30 s); one that
// answers otherwise fails at once. The error has the status, the first
// lines of the answer and the node's last error-log line.
func (d *Driver) siteCheck(ctx context.Context, p *plan.Plan, front, n *plan.Node, limit time.Duration) error {
	addr, port, ok := poolAddr(p, front, n)
	if !ok {
		return nil
	}
	if limit <= 0 || limit > 30*time.Second {
		limit = 30 * time.Second
	}
	host := p.Domain
	if host == "" {
		host = "localhost"
	}
	check := p.Site.Check
	if check == "" {
		check = "/healthz"
	}
	deadline := time.Now().Add(limit)
	for _, target := range []string{check, "/"} {
		url := "http://" + netip.AddrPortFrom(addr, uint16(port)).String() + target
		for {
			code, body, err := d.sys().siteGet(ctx, front.Netns, url, host)
			if err == nil && code/100 == 2 {
				break
			}
			// A gateway status is the web server's while PHP is
			// still starting: wait, as for no answer at all.
			starting := err != nil || code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
			if !starting || time.Now().After(deadline) {
				if err != nil {
					return fmt.Errorf("%s did not answer GET %s within %v: %v%s", n.Name, target, limit, err, d.errorLine(ctx, p, n))
				}
				return fmt.Errorf("%s answered GET %s with %d%s%s", n.Name, target, code, bodyLines(body), d.errorLine(ctx, p, n))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// poolAddr is where the front reaches app node n.
func poolAddr(p *plan.Plan, front, n *plan.Node) (netip.Addr, int, bool) {
	for _, peer := range p.Peers(front) {
		if peer.Node.Name == n.Name {
			return n.Addr(peer.Flow.Network), peer.Flow.Port.Number, true
		}
	}
	return netip.Addr{}, 0, false
}

// bodyLines is the first lines of an answer, for an error message.
func bodyLines(body []byte) string {
	lines := strings.Split(strings.TrimSpace(string(body)), "\n")
	if len(lines) > 5 {
		lines = lines[:5]
	}
	var b strings.Builder
	for _, l := range lines {
		l = strings.Map(func(r rune) rune {
			if r < ' ' && r != '\t' || r == 0x7f {
				return -1
			}
			return r
		}, strings.TrimSpace(l))
		if l != "" {
			b.WriteString("\n    | " + truncate(l, 200))
		}
	}
	if b.Len() == 0 {
		return " and an empty body"
	}
	return ":" + b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

var errorLineRE = regexp.MustCompile(`(?i)php (fatal|parse|warning)|error`)

// errorLine is the last error line of n's daemon logs, for an error
// message, or nothing.
func (d *Driver) errorLine(ctx context.Context, p *plan.Plan, n *plan.Node) string {
	var buf bytes.Buffer
	if err := d.Logs(ctx, p.Stack, n.Name, "", 40, false, &buf); err != nil {
		return ""
	}
	lines := strings.Split(buf.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if errorLineRE.MatchString(lines[i]) {
			return "\n  " + n.Name + "'s error log: " + truncate(strings.TrimSpace(lines[i]), 400)
		}
	}
	return ""
}

// gate runs verify on n's rows and columns: a switched node must be as
// isolated as the plan says before it gets requests.
func (d *Driver) gate(ctx context.Context, p *plan.Plan, j *journal, n *plan.Node) error {
	o := verify.Options{Nodes: []string{n.Name}}
	for _, obj := range j.list(KindProcess) {
		if d.sys().processAlive(obj) {
			o.Supervisor, _ = strconv.Atoi(obj.Name)
		}
	}
	rep, err := d.sys().verify(ctx, p, o)
	if err != nil {
		return fmt.Errorf("re-verify %s: %w", n.Name, err)
	}
	if fails := rep.Failures(); len(fails) > 0 {
		return fmt.Errorf("re-verify %s: %d failures:\n    %s", n.Name, len(fails), strings.Join(fails, "\n    "))
	}
	d.progress("%s: re-verified (%d cells, %v)", n.Name, len(rep.Cells), rep.Duration.Round(time.Millisecond))
	return nil
}

// Rollback moves the running stack p back to release id, or to the
// release live before the current one, through the same surge, checks
// and gate as a deploy. The site directory's code stays as it is: up
// deploys again only once the site changes.
func (d *Driver) Rollback(ctx context.Context, p *plan.Plan, id string, o UpOptions) (*UpResult, error) {
	unlock, err := d.lockChange(ctx, p.Stack, "rollback")
	if err != nil {
		return nil, err
	}
	defer unlock()
	saved, err := d.savedPlan(p.Stack)
	if err != nil {
		return nil, fmt.Errorf("stack %s is not up: %w", p.Stack, err)
	}
	if !samePlan(saved, p) {
		return nil, fmt.Errorf("the stack file changed since stack %s was last brought up; run 'bulkhead up' first, or roll back with the file as it was", p.Stack)
	}
	j, err := loadJournal(d.paths(p.Stack).journal(), p.Stack)
	if err == nil {
		err = d.adoptPair(j)
	}
	if err != nil {
		return nil, err
	}
	if !d.supervisorAlive(j) {
		return nil, fmt.Errorf("stack %s is not running (no supervisor); run 'bulkhead up' first", p.Stack)
	}
	store := d.releaseStore(p)
	idx, err := store.Load()
	if err != nil {
		return nil, err
	}
	var r *release.Release
	if id == "" {
		for i := len(idx.Releases) - 1; i >= 0 && r == nil; i-- {
			if idx.Releases[i].State == release.Previous {
				r = &idx.Releases[i]
			}
		}
		if r == nil {
			return nil, fmt.Errorf("stack %s has no earlier release to roll back to; see 'bulkhead releases'", p.Stack)
		}
	} else if r, err = idx.Find(id); err != nil {
		return nil, err
	}
	res := &UpResult{Release: r.ID}
	if r.ID == idx.Live && len(idx.Nodes) == 0 {
		d.progress("release %s is already live", r.ID)
		return res, nil
	}
	res.Changed = true
	if err := d.rollout(ctx, p, o, j, r.ID, false, res); err != nil {
		return nil, err
	}
	if idx, err = store.Load(); err != nil {
		return nil, err
	}
	_, fingerprint, err := d.renderNodes(p, o.SiteDir, idx, nil)
	if err != nil {
		return nil, err
	}
	return res, d.markApplied(p, fingerprint, o.SiteDir)
}

// samePlan reports whether two plans are the same.
func samePlan(a, b *plan.Plan) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// Releases lists stack's releases.
func (d *Driver) Releases(ctx context.Context, stack string) (*release.Index, error) {
	if _, err := os.Stat(d.paths(stack).stack); err != nil {
		return nil, fmt.Errorf("stack %s: %w", stack, err)
	}
	return (&release.Store{Dir: d.paths(stack).releases(), Meta: d.paths(stack).releaseMeta()}).Load()
}
