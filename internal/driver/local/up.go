package local

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkhead/bulkhead/internal/durable"
	"github.com/bulkhead/bulkhead/internal/service"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/pkgs"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/runc"
	"github.com/bulkhead/bulkhead/internal/secrets"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// UpOptions and UpResult are the backend's, shared by every driver.
type (
	UpOptions = driver.UpOptions
	UpResult  = driver.UpResult
	Change    = driver.Change
)

// Up makes the host run p. On a host where the stack does not exist yet, a
// failure removes everything Up made; on one where it exists, a failure
// leaves what is there, and Up or Down can finish.
func (d *Driver) Up(ctx context.Context, p *plan.Plan, o UpOptions) (*UpResult, error) {
	if err := d.packages(ctx, p, o.NoInstall); err != nil {
		return nil, err
	}
	holdHost, _, err := d.lockHost(syscall.LOCK_SH)
	if err != nil {
		return nil, err
	}
	unlockHost := sync.OnceFunc(holdHost)
	defer unlockHost()
	ps := d.paths(p.Stack)
	_, statErr := os.Stat(ps.stack)
	existed := statErr == nil
	unlock, err := d.lockChange(ctx, p.Stack, "up")
	if err != nil {
		return nil, err
	}
	defer unlock()
	j, err := loadJournal(ps.journal(), p.Stack)
	if err != nil {
		return nil, err
	}
	fresh := len(j.Objects) == 0
	res, err := d.up(ctx, p, o, j)
	if err != nil && fresh {
		d.progress("up failed; removing what it made")
		// This up's hold on the shared files ends here, so that removing
		// its stack can remove them too when it was the only one.
		unlockHost()
		// The caller's context may be what failed (Ctrl-C): clean up
		// with a context of our own.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if derr := d.destroy(cctx, p.Stack, j, !existed); derr != nil {
			return nil, errors.Join(err, fmt.Errorf("clean up after the failed up (run 'bulkhead down' to finish): %w", derr))
		}
	}
	return res, err
}

func (d *Driver) packages(ctx context.Context, p *plan.Plan, noInstall bool) error {
	missing, err := d.sys().missingPackages(ctx, pkgs.Needed(p))
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	if noInstall {
		return fmt.Errorf("missing Debian packages: %s; install them (apt-get install %s) or run without --no-install", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	d.progress("installing %d packages: %s", len(missing), strings.Join(missing, " "))
	out := d.Progress
	if out == nil {
		out = os.Stderr
	}
	if err := d.sys().installPackages(ctx, missing, out); err != nil {
		return err
	}
	// The host's own copies of the daemons would start on the host's
	// addresses at the next boot.
	return d.disableHostUnits(ctx, catalog.HostUnits(missing))
}

// up applies p in phases, each a function below, in this order. A phase
// records in j what it is about to make before it makes it. When the site
// changed, the new release then rolls out (see rollout).
func (d *Driver) up(ctx context.Context, p *plan.Plan, o UpOptions, j *journal) (*UpResult, error) {
	res := &UpResult{}
	if err := d.enter(ctx, "checkHost"); err != nil {
		return nil, err
	}
	if err := d.checkHost(ctx, p, j, o.NoSandbox); err != nil {
		return nil, err
	}
	if err := d.keepStackFile(p, o.StackFile); err != nil {
		return nil, err
	}
	if err := d.enter(ctx, "release"); err != nil {
		return nil, err
	}
	idx, target, err := d.siteRelease(ctx, p, o.SiteDir)
	if err != nil {
		return nil, err
	}
	if err := d.enter(ctx, "render"); err != nil {
		return nil, err
	}
	rendered, fingerprint, err := d.renderNodes(p, o.SiteDir, idx, nil)
	if err != nil {
		return nil, err
	}
	if !d.converged(ctx, p, j, fingerprint) {
		res.Changed = true
		if err := d.apply(ctx, p, o, j, rendered, res); err != nil {
			return nil, err
		}
	} else if target == "" {
		// Nothing to apply, but storage is a node, and a node may have
		// put something beside the writable paths or replaced one: set
		// that right.
		return res, d.syncStorage(p, o.SiteDir, j, res)
	}
	if target != "" {
		res.Changed = true
		if err := d.enter(ctx, "rollout"); err != nil {
			return nil, err
		}
		if err := d.rollout(ctx, p, o, j, target, true, res); err != nil {
			return nil, err
		}
		if idx, err = d.releaseStore(p).Load(); err != nil {
			return nil, err
		}
		if _, fingerprint, err = d.renderNodes(p, o.SiteDir, idx, nil); err != nil {
			return nil, err
		}
	}
	if err := d.enter(ctx, "markApplied"); err != nil {
		return nil, err
	}
	if err := d.markApplied(p, fingerprint, o.SiteDir); err != nil {
		return nil, err
	}
	d.phaseDone()
	return res, nil
}

// apply makes the host run p with the rendered files: the phases of up
// that change the host.
func (d *Driver) apply(ctx context.Context, p *plan.Plan, o UpOptions, j *journal, rendered []render.Node, res *UpResult) error {
	if err := d.enter(ctx, "hostFiles"); err != nil {
		return err
	}
	olds, err := d.hostFiles(p)
	if err != nil {
		return err
	}
	if err := d.enter(ctx, "bootUnit"); err != nil {
		return err
	}
	if err := d.installBootUnit(ctx); err != nil {
		return err
	}
	if err := d.enter(ctx, "sandbox"); err != nil {
		return err
	}
	if err := d.sandbox(p, j, o.NoSandbox); err != nil {
		return err
	}
	// A running edge learns of its pool's changes last when nodes join
	// (they must serve first) and first when nodes leave (they must get
	// no new requests before they stop).
	front := d.runningFront(ctx, p)
	byName := map[string]render.Node{}
	for _, r := range rendered {
		byName[r.Name] = r
	}
	if leaving := leaving(olds, p); len(leaving) > 0 {
		if err := d.enter(ctx, "leaving"); err != nil {
			return err
		}
		if err := d.updateFront(ctx, p, front, byName, j, res); err != nil {
			return err
		}
		front = nil
		d.drain(ctx, leaving, o.Drain)
		for _, n := range leaving {
			res.Removed = append(res.Removed, n.Name)
		}
		// The supervisor lets go of their site mounts and stops
		// restarting them before they go.
		if err := d.startSupervisor(ctx, p, j, olds); err != nil {
			return err
		}
	}
	// The host's tables follow the plan only now: until its nodes are
	// drained, the bridge must still pass what leaving nodes answer.
	if err := d.enter(ctx, "fabric"); err != nil {
		return err
	}
	d.progress("network: host table, %d bridges", len(p.Networks))
	if err := d.fabric(ctx, p, j); err != nil {
		return err
	}
	if err := d.enter(ctx, "removeStale"); err != nil {
		return err
	}
	if err := d.removeStale(ctx, p, j); err != nil {
		return err
	}
	if err := d.enter(ctx, "nodes"); err != nil {
		return err
	}
	changes, err := d.nodes(ctx, p, rendered, j, front)
	if err != nil {
		return err
	}
	if err := d.enter(ctx, "outside"); err != nil {
		return err
	}
	if err := d.outside(ctx, p, j); err != nil {
		return err
	}
	if err := d.enter(ctx, "syncStorage"); err != nil {
		return err
	}
	if err := d.syncStorage(p, o.SiteDir, j, res); err != nil {
		return err
	}
	if err := d.enter(ctx, "restartChanged"); err != nil {
		return err
	}
	if err := d.restartChanged(ctx, p, changes); err != nil {
		return err
	}
	if err := d.enter(ctx, "siteMounts"); err != nil {
		return err
	}
	if err := d.prepareSiteMounts(ctx, p, j); err != nil {
		return err
	}
	if err := d.enter(ctx, "containers"); err != nil {
		return err
	}
	started, err := d.containers(ctx, p, j)
	if err != nil {
		return err
	}
	res.Restarted = append(res.Restarted, started...)
	if err := d.enter(ctx, "supervisor"); err != nil {
		return err
	}
	if err := d.startSupervisor(ctx, p, j, olds); err != nil {
		return err
	}
	// Grants and keys for new nodes, before any request reaches them.
	if err := d.enter(ctx, "reload"); err != nil {
		return err
	}
	if err := d.reloadChanged(ctx, p, changes, res); err != nil {
		return err
	}
	if err := d.enter(ctx, "waitHealthy"); err != nil {
		return err
	}
	if err := d.waitHealthy(ctx, p, j, o.Wait); err != nil {
		return err
	}
	if err := d.enter(ctx, "front"); err != nil {
		return err
	}
	if front != nil {
		// The site answers on every app node that is about to get
		// visitors, before it gets them.
		var apps []*plan.Node
		for _, name := range started {
			if n := p.Node(name); n != nil && n.Role == spec.RoleApp {
				apps = append(apps, n)
			}
		}
		if err := d.eachNode(ctx, apps, func(ctx context.Context, _ int, n *plan.Node) error {
			return d.siteCheck(ctx, p, front, n, o.Wait)
		}); err != nil {
			return err
		}
		if err := d.updateFront(ctx, p, front, byName, j, res); err != nil {
			return err
		}
	}
	if err := d.enter(ctx, "waitServing"); err != nil {
		return err
	}
	if err := d.waitServing(ctx, p, o.Wait); err != nil {
		return err
	}
	return writeJSON(d.paths(p.Stack).appliedPlan(), p, 0o600)
}

// enter begins phase of an up. A cancelled up (Ctrl-C) stops here, between
// phases, rather than part way into the next one. onPhase, a test's, may
// fail or cancel the up at any phase.
func (d *Driver) enter(ctx context.Context, phase string) error {
	if d.phaseDone != nil {
		d.phaseDone()
	}
	d.phaseDone = d.took("phase " + phase)
	if d.onPhase != nil {
		if err := d.onPhase(phase); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// checkHost makes the stack's directory and runs preflight, with the
// ports the stack already publishes counted as its own.
func (d *Driver) checkHost(ctx context.Context, p *plan.Plan, j *journal, noSandbox bool) error {
	if err := os.MkdirAll(d.paths(p.Stack).stack, 0o700); err != nil {
		return err
	}
	if err := d.adoptPair(j); err != nil {
		return err
	}
	return d.preflight(ctx, p, j, d.supervisorAlive(j), noSandbox)
}

// renderNodes renders every node's files with the stack's secrets, each
// site node reading the release idx gives it, with the app nodes in out
// left out of the edge's pool; and the fingerprint of everything an up
// applies.
func (d *Driver) renderNodes(p *plan.Plan, site string, idx *release.Index, out map[string]bool) ([]render.Node, string, error) {
	sec, err := d.secrets(p)
	if err != nil {
		return nil, "", err
	}
	rs := sec.For(p)
	if err := userCertificate(p, &rs); err != nil {
		return nil, "", err
	}
	if err := userMail(p, &rs); err != nil {
		return nil, "", err
	}
	nodes, err := renderAll(p, rs, idx, out)
	if err != nil {
		return nil, "", err
	}
	fingerprint, err := d.fingerprint(p, nodes, site)
	if err != nil {
		return nil, "", err
	}
	return nodes, fingerprint, nil
}

// hostFiles writes what the stack's nodes share on the host: their /etc,
// the bulkhead binary, and the plan, which the supervisor reads. It
// returns the plans the host may run parts of until now (see
// runningPlans).
func (d *Driver) hostFiles(p *plan.Plan) ([]*plan.Plan, error) {
	ps := d.paths(p.Stack)
	d.progress("host: /etc for nodes, binary")
	if err := prepareEtc(ps.etc()); err != nil {
		return nil, err
	}
	if err := installBinary(ps.binary()); err != nil {
		return nil, err
	}
	olds := d.runningPlans(p.Stack)
	if err := writeJSON(ps.plan(), p, 0o600); err != nil {
		return nil, err
	}
	return olds, nil
}

// runningPlans are the plans whose nodes the host may run now: the one
// the last apply that finished applied (applied-plan.json), and the one
// the last up saved for the supervisor (plan.json). They differ after an
// up that stopped part way: it may have made some of its plan's new nodes,
// and removed none of the old plan's, which the next up still has to take
// out of the edge's pool and the supervisor's care before it removes
// them. The supervisor runs one of the two. One that cannot be read is
// left out; a stack no bulkhead with applied-plan.json has changed has
// only plan.json.
func (d *Driver) runningPlans(stack string) []*plan.Plan {
	ps := d.paths(stack)
	var out []*plan.Plan
	for _, path := range []string{ps.appliedPlan(), ps.plan()} {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if p, err := plan.Decode(data); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// nodes makes each node's namespace with its firewall and links, its disk,
// its root and its files, and says what each node's change needs. The
// files of front, the running edge, wait for updateFront.
func (d *Driver) nodes(ctx context.Context, p *plan.Plan, rendered []render.Node, j *journal, front *plan.Node) (map[string]nodeChange, error) {
	ps := d.paths(p.Stack)
	byName := map[string]render.Node{}
	for _, r := range rendered {
		byName[r.Name] = r
	}
	d.progress("network: %d node namespaces with their firewalls", len(p.Nodes))
	changes := make([]*nodeChange, len(p.Nodes))
	err := d.eachNode(ctx, pointers(p.Nodes), func(ctx context.Context, i int, n *plan.Node) error {
		r := byName[n.Name]
		// The firewall goes in live, in one transaction.
		done := d.took("nodeFabric", "node", n.Name)
		if err := d.nodeFabric(ctx, p, n, fileData(r, "nftables.nft"), j); err != nil {
			return err
		}
		done()
		done = d.took("ensureVolume", "node", n.Name)
		if err := d.ensureVolume(ctx, p, n, j); err != nil {
			return err
		}
		done()
		done = d.took("prepareRootfs", "node", n.Name)
		if err := d.prepareRootfs(ps.nodeRoot(n.Name), hostID(j.nodeIDs(n.Name), 0)); err != nil {
			return fmt.Errorf("node %s root: %w", n.Name, err)
		}
		done()
		if front != nil && n.Name == front.Name {
			return nil
		}
		done = d.took("writeNode", "node", n.Name)
		c, err := d.writeNode(ps.node(n.Name), n, r, j.nodeIDs(n.Name))
		done()
		if err != nil {
			return fmt.Errorf("node %s files: %w", n.Name, err)
		}
		changes[i] = &c
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := map[string]nodeChange{}
	for i, c := range changes {
		if c != nil {
			out[p.Nodes[i].Name] = *c
		}
	}
	return out, nil
}

// restartChanged deletes the containers of running nodes whose changed
// files only a restart applies; containers then starts them again.
func (d *Driver) restartChanged(ctx context.Context, p *plan.Plan, changes map[string]nodeChange) error {
	for i := range p.Nodes {
		n := &p.Nodes[i]
		c := changes[n.Name]
		if len(c.Restart) == 0 {
			continue
		}
		d.progress("%s: restarting for %s", n.Name, strings.Join(c.Restart, ", "))
		if err := d.sys().deleteContainer(ctx, n.Container, true); err != nil {
			return err
		}
	}
	return nil
}

// reloadChanged asks the agents of nodes whose changed files their
// services reload to reload them, several nodes at once: adding app nodes
// reloads the database's grants and storage's keys, and neither waits on
// the other.
func (d *Driver) reloadChanged(ctx context.Context, p *plan.Plan, changes map[string]nodeChange, res *UpResult) error {
	var nodes []*plan.Node
	for i := range p.Nodes {
		n := &p.Nodes[i]
		c := changes[n.Name]
		// A node this up started reads its new files as it starts.
		if c.restarts() || len(c.Reload) == 0 || slices.Contains(res.Restarted, n.Name) {
			continue
		}
		nodes = append(nodes, n)
	}
	done := make([]bool, len(nodes))
	err := d.eachNode(ctx, nodes, func(ctx context.Context, i int, n *plan.Node) error {
		if err := d.reloadNode(ctx, p, n, changes[n.Name]); err != nil {
			return err
		}
		done[i] = true
		return nil
	})
	for i, n := range nodes {
		if done[i] {
			res.Reloaded = append(res.Reloaded, n.Name)
		}
	}
	return err
}

// reloadNode reloads every service of n that can.
func (d *Driver) reloadNode(ctx context.Context, p *plan.Plan, n *plan.Node, c nodeChange) error {
	svcs, err := d.services(p, n)
	if err != nil {
		return err
	}
	for _, s := range svcs {
		if s.Reload == nil {
			continue
		}
		d.progress("%s: reloading %s for %s", n.Name, s.Name, strings.Join(c.Reload, ", "))
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := d.sys().reloadService(rctx, d.paths(p.Stack).node(n.Name).socket(), s.Name)
		cancel()
		if err != nil {
			return fmt.Errorf("node %s: %w; see 'bulkhead logs %s'", n.Name, err, n.Name)
		}
	}
	return nil
}

// services reads the services a node's agent runs, as written.
func (d *Driver) services(p *plan.Plan, n *plan.Node) ([]service.Service, error) {
	data, err := os.ReadFile(filepath.Join(d.paths(p.Stack).node(n.Name).conf(), "services.json"))
	if err != nil {
		return nil, err
	}
	var svcs []service.Service
	if err := json.Unmarshal(data, &svcs); err != nil {
		return nil, fmt.Errorf("node %s services.json: %w", n.Name, err)
	}
	return svcs, nil
}

// runningFront returns the node the published ports lead to, if its
// container runs: its pool changes wait for updateFront.
func (d *Driver) runningFront(ctx context.Context, p *plan.Plan) *plan.Node {
	if len(p.Published) == 0 {
		return nil
	}
	n := p.Node(p.Published[0].Node)
	if n == nil {
		return nil
	}
	if st, err := d.sys().containerState(ctx, n.Container); err != nil || st.Status != "running" {
		return nil
	}
	return n
}

// updateFront writes the front's files, and reloads or restarts it as
// they need. A nil front has nothing to do.
func (d *Driver) updateFront(ctx context.Context, p *plan.Plan, front *plan.Node, rendered map[string]render.Node, j *journal, res *UpResult) error {
	if front == nil {
		return nil
	}
	return d.applyNode(ctx, p, front, rendered[front.Name], j, res)
}

// applyNode writes the files of running node n, and reloads or restarts
// it as they need.
func (d *Driver) applyNode(ctx context.Context, p *plan.Plan, n *plan.Node, files render.Node, j *journal, res *UpResult) error {
	c, err := d.writeNode(d.paths(p.Stack).node(n.Name), n, files, j.nodeIDs(n.Name))
	if err != nil {
		return fmt.Errorf("node %s files: %w", n.Name, err)
	}
	switch {
	case c.restarts():
		if err := d.restartChanged(ctx, p, map[string]nodeChange{n.Name: c}); err != nil {
			return err
		}
		if err := d.startContainer(ctx, p, n, j); err != nil {
			return err
		}
		res.Restarted = append(res.Restarted, n.Name)
	case len(c.Reload) > 0:
		if err := d.reloadNode(ctx, p, n, c); err != nil {
			return err
		}
		res.Reloaded = append(res.Reloaded, n.Name)
	}
	return nil
}

// leaving lists the nodes of the plans the host may run, olds, that p
// does not have.
func leaving(olds []*plan.Plan, p *plan.Plan) []*plan.Node {
	var out []*plan.Node
	seen := map[string]bool{}
	for _, old := range olds {
		for i := range old.Nodes {
			n := &old.Nodes[i]
			if p.Node(n.Name) == nil && !seen[n.Name] {
				seen[n.Name] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// drain waits until each leaving node has no connection left on the
// ports it serves, or limit (default 10s) passes: the edge sends them
// nothing new, and what they are serving finishes.
func (d *Driver) drain(ctx context.Context, nodes []*plan.Node, limit time.Duration) {
	if limit <= 0 {
		limit = 10 * time.Second
	}
	deadline := time.Now().Add(limit)
	for _, node := range nodes {
		c := node.Name
		var ports []int
		for _, l := range node.Listens {
			if l.Proto == "tcp" {
				ports = append(ports, l.Number)
			}
		}
		d.progress("%s: draining (up to %v)", c, time.Until(deadline).Round(time.Second))
		for {
			n, err := d.sys().connections(ctx, node.Container, ports)
			if err != nil || n == 0 {
				break
			}
			if time.Now().After(deadline) {
				d.progress("%s: %d connections still open after %v; stopping it anyway", c, n, limit)
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// containers starts every node's container that does not run, in
// startOrder, and returns the nodes it started.
func (d *Driver) containers(ctx context.Context, p *plan.Plan, j *journal) ([]string, error) {
	d.progress("containers: starting %d nodes", len(p.Nodes))
	state := d.containerStates(ctx)
	var started []string
	for _, tier := range startOrder(p) {
		fresh := make([]bool, len(tier))
		err := d.eachNode(ctx, tier, func(ctx context.Context, i int, n *plan.Node) error {
			st, stErr := state(ctx, n.Container)
			defer d.took("startContainer", "node", n.Name)()
			if err := d.startContainerFrom(ctx, p, n, j, st, stErr); err != nil {
				return err
			}
			fresh[i] = st.Status != "running"
			return nil
		})
		if err != nil {
			return nil, err
		}
		for i, n := range tier {
			if fresh[i] {
				started = append(started, n.Name)
			}
		}
	}
	return started, nil
}

// containerStates reads the state of the host's containers with one runc
// list, and returns a func that gives a container's state as runc state
// would: at 100 app nodes, a runc state a node was a hundred runc
// processes an up (or a round of down's wait), each a Go program
// starting. list fails outright when any container on the host goes away
// while it reads (another stack's, say); then the func asks runc state.
func (d *Driver) containerStates(ctx context.Context) func(ctx context.Context, id string) (runc.Status, error) {
	sys := d.sys()
	listed, err := sys.listContainers(ctx)
	if err != nil {
		d.logger().Debug("runc list failed; asking each container", "err", err)
		return sys.containerState
	}
	byID := map[string]runc.Status{}
	for _, st := range listed {
		byID[st.ID] = st
	}
	return func(_ context.Context, id string) (runc.Status, error) {
		st, ok := byID[id]
		if !ok {
			return runc.Status{}, runc.ErrNotExist
		}
		return st, nil
	}
}

// markApplied records the fingerprint of what this up applied, for the
// next up's converged.
func (d *Driver) markApplied(p *plan.Plan, fingerprint, site string) error {
	if err := writeJSON(d.paths(p.Stack).source(), source{Site: site}, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.paths(p.Stack).stack, "applied"), []byte(fingerprint), 0o600)
}

// syncStorage makes the storage node hold the site's writable paths and
// nothing else, keeping the uploads in them; the code is in releases. What
// else storage holds (an older stack's code, or what a node put there) is
// removed and named, and nothing a node planted is followed (see syncSite).
func (d *Driver) syncStorage(p *plan.Plan, site string, j *journal, res *UpResult) error {
	st := p.Role(spec.RoleStorage)
	if len(st) == 0 {
		return nil
	}
	ps := d.paths(p.Stack)
	nodeIDs := j.nodeIDs(st[0].Name)
	sync, err := d.sys().syncSite(siteSync{
		Node: st[0].Name, Src: site, Data: ps.node(st[0].Name).data(),
		Writable: p.Site.Writable,
		Root:     ids{hostID(nodeIDs, 0), hostID(nodeIDs, 0)},
		Writer:   ids{hostID(nodeIDs, siteOwner), hostID(nodeIDs, siteOwner)},
	})
	if err != nil {
		return err
	}
	res.Synced = len(sync.Put)
	if len(sync.Put)+len(sync.Removed) > 0 {
		res.Changed = true
		kept := strings.Join(p.Site.Writable, ", ")
		if kept == "" {
			kept = "no writable path"
		}
		d.progress("site: %s on %s kept; %d put, %d removed", kept, st[0].Name, len(sync.Put), len(sync.Removed))
	}
	if n := len(sync.Removed); n > 0 {
		d.progress("site: removed %d entries from %s, which holds only the writable paths: %s", n, st[0].Name, strings.Join(sync.Removed, ", "))
	}
	return nil
}

// startOrder starts the tiers others depend on first: storage, db and
// cache, then static and app, then the edge that faces visitors. The
// nodes of one rank start together.
func startOrder(p *plan.Plan) [][]*plan.Node {
	rank := map[string]int{spec.RoleStorage: 0, spec.RoleDB: 1, spec.RoleCache: 1, spec.RoleStatic: 2, spec.RoleApp: 2, spec.RoleEdge: 3}
	var out [][]*plan.Node
	for r := 0; r <= 3; r++ {
		var tier []*plan.Node
		for i := range p.Nodes {
			if rank[p.Nodes[i].Role] == r {
				tier = append(tier, &p.Nodes[i])
			}
		}
		if len(tier) > 0 {
			out = append(out, tier)
		}
	}
	return out
}

func fileData(n render.Node, path string) []byte {
	for _, f := range n.Files {
		if f.Path == path {
			return f.Data
		}
	}
	return nil
}

// secrets loads the stack's secrets, or makes them on first up. They live
// as long as the stack's data: the database was initialised with them.
func (d *Driver) secrets(p *plan.Plan) (*secrets.Stack, error) {
	path := d.paths(p.Stack).secretsFile()
	s, err := d.loadSecrets(p.Stack)
	switch {
	case err != nil:
		return nil, err
	case s != nil:
		r, err := s.Renew(p, time.Now())
		if err != nil {
			return nil, err
		}
		if r.Renewed {
			exp, _ := s.EdgeExpires()
			d.progress("edge: certificate renewed, valid until %s", exp.Format(time.DateOnly))
		}
		if r.NewCA {
			d.progress("edge: the stack kept no CA key, so it has a new CA; visitors who trusted the old one must trust %s", d.CACertPath(p.Stack))
		}
	default:
		if s, err = secrets.Generate(p); err != nil {
			return nil, err
		}
	}
	if _, err := s.Complete(p); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := writeJSON(path, s, 0o600); err != nil {
		return nil, err
	}
	if err := durable.Write(d.CACertPath(p.Stack), s.CACert, 0o644); err != nil {
		return nil, err
	}
	return s, d.writeClientKeys(p, s)
}

// loadSecrets reads the stack's saved secrets; nil, and no error, when
// it has none yet.
func (d *Driver) loadSecrets(stack string) (*secrets.Stack, error) {
	path := d.paths(stack).secretsFile()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := &secrets.Stack{}
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return s, nil
}

// userCertificate puts the user's own TLS certificate and key, if the stack
// names them, in place of the stack CA's, after checking that they pair.
func userCertificate(p *plan.Plan, rs *render.Secrets) error {
	if p.Publish.Certificate == "" {
		return nil
	}
	cert, err := os.ReadFile(p.Publish.Certificate)
	if err != nil {
		return fmt.Errorf("publish.certificate: %w", err)
	}
	key, err := os.ReadFile(p.Publish.Key)
	if err != nil {
		return fmt.Errorf("publish.key: %w", err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return fmt.Errorf("publish.certificate %s and publish.key %s do not make a TLS key pair: %w", p.Publish.Certificate, p.Publish.Key, err)
	}
	rs.TLSCert, rs.TLSKey = cert, key
	return nil
}

// userMail reads what the mail relay needs of the operator's files: the
// smarthost's password and the authorities that sign its certificate.
func userMail(p *plan.Plan, rs *render.Secrets) error {
	m := p.Mail
	if m == nil {
		return nil
	}
	if m.PasswordFile != "" {
		data, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return fmt.Errorf("mail.password_file: %w", err)
		}
		pw, _, _ := strings.Cut(string(data), "\n")
		pw = strings.TrimSuffix(pw, "\r")
		if pw == "" {
			return fmt.Errorf("mail.password_file %s: the first line is empty; write the smarthost's password there", m.PasswordFile)
		}
		rs.MailPassword = pw
	}
	if m.CAFile != "" {
		data, err := os.ReadFile(m.CAFile)
		if err != nil {
			return fmt.Errorf("mail.ca_file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(data) {
			return fmt.Errorf("mail.ca_file %s holds no PEM certificate", m.CAFile)
		}
		rs.MailCA = data
	}
	return nil
}

// writeClientKeys writes the host-side sshfs credentials: each client's
// private key and the pinned storage host key.
func (d *Driver) writeClientKeys(p *plan.Plan, s *secrets.Stack) error {
	dir := d.paths(p.Stack).secrets()
	st := p.Role(spec.RoleStorage)
	if len(st) == 0 {
		return nil
	}
	var known strings.Builder
	for _, n := range p.Nodes {
		if key, ok := s.StorageClientKeys[n.Name]; ok {
			if err := durable.Write(filepath.Join(dir, n.Name+".key"), key, 0o600); err != nil {
				return err
			}
		}
	}
	for _, i := range st[0].Ifaces {
		fmt.Fprintf(&known, "%s %s\n", i.Addr, s.StorageHostPublicKey)
	}
	return durable.Write(filepath.Join(dir, "known_hosts"), []byte(known.String()), 0o600)
}

func writeJSON(path string, v any, mode os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return durable.Write(path, data, mode)
}

// fingerprint digests everything an up applies but the site's code: the
// plan, every rendered file (which name the release each node serves),
// the site's directory and the bulkhead binary. Equal fingerprints mean
// an up has nothing to do but roll out a new release.
func (d *Driver) fingerprint(p *plan.Plan, nodes []render.Node, site string) (string, error) {
	h := sha256.New()
	pj, _ := json.Marshal(p)
	h.Write(pj)
	for _, n := range nodes {
		for _, f := range n.Files {
			fmt.Fprintf(h, "%s/%s %o %d\n", n.Name, f.Path, f.Mode, len(f.Data))
			h.Write(f.Data)
		}
		sj, _ := json.Marshal(n.Services)
		h.Write(sj)
	}
	// The site dir too: a stack moved to another site directory syncs
	// that one's uploads. Its code is in the releases the files name.
	fmt.Fprintf(h, "site %s\n", site)
	bh, err := selfHash()
	if err != nil {
		return "", err
	}
	h.Write(bh)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// converged reports whether the host already runs p as last applied: same
// fingerprint, every container running, the supervisor and its keeper
// alive.
func (d *Driver) converged(ctx context.Context, p *plan.Plan, j *journal, fingerprint string) bool {
	applied, err := os.ReadFile(filepath.Join(d.paths(p.Stack).stack, "applied"))
	if err != nil || string(applied) != fingerprint || !d.supervisorAlive(j) || !d.keeperAlive(j) {
		return false
	}
	// The host's guard too: an interrupted verify --self-test may have
	// left it out.
	sys := d.sys()
	for _, family := range hostFamilies {
		if !sys.nftHasTable(ctx, "", family, p.HostNFT) {
			return false
		}
	}
	if !d.hasNeighbourRoom(p) {
		return false
	}
	if !d.antiSpoofWhole(ctx, p) {
		return false
	}
	for _, n := range p.Nodes {
		if !sys.netnsExists(n.Netns) {
			return false
		}
	}
	state := d.containerStates(ctx)
	return d.eachNode(ctx, pointers(p.Nodes), func(ctx context.Context, _ int, n *plan.Node) error {
		if st, err := state(ctx, n.Container); err != nil || st.Status != "running" {
			return fmt.Errorf("node %s is not running", n.Name)
		}
		return d.checkFirewall(ctx, n)
	}) == nil
}

// removeStale deletes what an earlier up made for nodes this plan no longer
// has (an app pool scaled down): containers, site mount points,
// namespaces, veths.
func (d *Driver) removeStale(ctx context.Context, p *plan.Plan, j *journal) error {
	want := map[Object]bool{}
	ps := d.paths(p.Stack)
	for _, n := range p.Nodes {
		if n.Mount != nil {
			want[Object{Kind: KindMount, Name: ps.node(n.Name).srv()}] = true
		}
		want[Object{Kind: KindNetns, Name: n.Netns}] = true
		want[Object{Kind: KindContainer, Name: n.Container}] = true
		for _, i := range n.Ifaces {
			want[Object{Kind: KindVeth, Name: i.Host}] = true
		}
	}
	want[Object{Kind: KindNetns, Name: p.Outside.Netns}] = true
	want[Object{Kind: KindVeth, Name: p.Outside.Iface.Host}] = true
	var errs []error
	for _, kind := range []string{KindContainer, KindMount, KindNetns, KindVeth} {
		var stale []Object
		for _, o := range j.list(kind) {
			if !want[o] {
				d.progress("removing %s %s, which the plan no longer has", o.Kind, o.Name)
				stale = append(stale, o)
			}
		}
		errs = append(errs, d.removeAll(ctx, p.Stack, j, kind, stale))
	}
	return errors.Join(errs...)
}

// waitServing waits until the site answers through the published port
// without a gateway error: every node can be healthy while the edge has not
// yet found its upstreams (haproxy marks them up only after its checks
// pass), and "up" should mean a visitor gets the site.
func (d *Driver) waitServing(ctx context.Context, p *plan.Plan, limit time.Duration) error {
	if limit == 0 {
		limit = 2 * time.Minute
	}
	url := "http://" + p.Publish.HTTP.String() + "/"
	deadline := time.Now().Add(limit)
	status := 0
	for {
		if code, err := d.sys().httpStatus(ctx, url); err == nil {
			status = code
			switch status {
			case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			default:
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("every node is healthy, but %s still answers %d after %v: the edge reaches no app node; see 'bulkhead logs edge'", url, status, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHealthy polls every node's agent, and the site mount of each node
// that has one, until all report healthy at once.
func (d *Driver) waitHealthy(ctx context.Context, p *plan.Plan, j *journal, limit time.Duration) error {
	if limit == 0 {
		limit = 2 * time.Minute
	}
	deadline := time.Now().Add(limit)
	ps := d.paths(p.Stack)
	targets := map[string]string{}
	for _, m := range d.siteMounts(p, j) {
		// Target is nodes/NODE/srv/shared.
		targets[filepath.Base(filepath.Dir(filepath.Dir(m.Target)))] = m.Target
	}
	nodes := pointers(p.Nodes)
	// What each node still lacks; nil once it was seen healthy.
	lacks := make([][]string, len(nodes))
	for i, n := range nodes {
		lacks[i] = []string{n.Name}
	}
	last := -1
	// Only the nodes not yet seen healthy are asked: at 100 app nodes,
	// asking every agent four times a second took CPU from the nodes
	// starting. Once every node has been seen healthy, all are asked
	// again (full), and up goes on only when such a round finds them all
	// healthy. The first round asks every node too.
	full := true
	for {
		// The agents are asked together: one busy agent's answer, or its
		// two seconds of silence, does not hold up the others'.
		asked := make([]bool, len(nodes))
		_ = d.eachNode(ctx, nodes, func(ctx context.Context, i int, n *plan.Node) error {
			if lacks[i] == nil && !full {
				return nil
			}
			lacks[i] = nil
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := d.sys().queryAgent(qctx, ps.node(n.Name).socket())
			cancel()
			asked[i] = true
			if err != nil || !st.Healthy {
				lacks[i] = []string{n.Name}
			}
			return nil
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		// The site mounts of the nodes asked, from one reading of the
		// host's mount table: each must answer, not just be listed.
		var mi []int
		var ts []string
		for i, n := range nodes {
			if t, ok := targets[n.Name]; ok && asked[i] {
				mi, ts = append(mi, i), append(ts, t)
			}
		}
		var answering []bool
		var err error
		if len(ts) > 0 {
			answering, err = d.sys().sshfsAnswering(ts)
		}
		for k, i := range mi {
			if err != nil || !answering[k] {
				lacks[i] = append(lacks[i], nodes[i].Name+" (site mount)")
			}
		}
		var sick []string
		healthy := 0
		for _, l := range lacks {
			if l == nil {
				healthy++
			}
			sick = append(sick, l...)
		}
		if healthy != last {
			d.progress("health: %d/%d nodes healthy", healthy, len(p.Nodes))
			last = healthy
		}
		if len(sick) == 0 {
			if full {
				return nil
			}
			full = true
			continue
		}
		full = false
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes not healthy after %v: %s; see 'bulkhead status' and 'bulkhead logs NODE'", limit, strings.Join(sick, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
