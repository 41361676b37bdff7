package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/internal/beneath"
	"github.com/bulkhead/bulkhead/internal/driver"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/secrets"
)

// Status and NodeStatus are the backend's, shared by every driver.
type (
	Status     = driver.Status
	NodeStatus = driver.NodeStatus
	Alert      = driver.Alert
	NodeUsage  = driver.NodeUsage
	Series     = driver.Series
	Point      = driver.Point
)

func (d *Driver) savedPlan(stack string) (*plan.Plan, error) {
	data, err := os.ReadFile(d.paths(stack).plan())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stack %s is not up on this host; run 'bulkhead up'", stack)
	}
	if err != nil {
		return nil, err
	}
	return plan.Decode(data)
}

// Status asks runc and every node's agent how the stack is.
func (d *Driver) Status(ctx context.Context, stack string) (*Status, error) {
	p, err := d.savedPlan(stack)
	if err != nil {
		return nil, err
	}
	j, err := loadJournal(d.paths(stack).journal(), stack)
	if err != nil {
		return nil, err
	}
	st := &Status{Stack: stack, CertExpires: d.certExpires(p)}
	st.Supervisor, st.Keeper = d.pairRunning(j)
	sup, err := loadSupervisorState(d.paths(stack).supervisorState())
	if err != nil {
		sup = &supervisorState{} // status shows what it can
	}
	for _, n := range p.Nodes {
		ns := NodeStatus{Name: n.Name, State: "missing"}
		for _, i := range n.Ifaces {
			ns.Addresses = append(ns.Addresses, i.Addr.String())
		}
		if c, err := d.sys().containerState(ctx, n.Container); err == nil {
			ns.State = c.Status
		}
		if r := sup.Nodes[n.Name]; r != nil {
			ns.ContainerRestarts = r.Count
			if r.CrashLoop && ns.State != "running" {
				ns.State = "crash-loop"
			}
		}
		if ns.State == "running" {
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			a, err := d.sys().queryAgent(qctx, d.paths(stack).node(n.Name).socket())
			cancel()
			if err == nil {
				ns.Healthy = a.Healthy
				ns.Services = a.Services
				for _, s := range a.Services {
					ns.Restarts += s.Restarts
				}
			}
		}
		st.Nodes = append(st.Nodes, ns)
	}
	if m := p.Dashboard; m != nil {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st.Alerts, err = d.sys().queryAlerts(qctx, p.Network(plan.NetPrivate).Bridge, m.Target)
		cancel()
		if err != nil {
			st.AlertsError = err.Error()
		}
	}
	return st, nil
}

// Usage asks the stack's monitor for each node's usage.
func (d *Driver) Usage(ctx context.Context, stack string) ([]NodeUsage, error) {
	p, err := d.savedPlan(stack)
	if err != nil {
		return nil, err
	}
	if p.Dashboard == nil {
		return nil, fmt.Errorf("stack %s has no monitor tier; add \"monitor: {}\" under tiers and run up", stack)
	}
	var nodes []string
	for _, n := range p.Nodes {
		nodes = append(nodes, n.Name)
	}
	return d.sys().queryUsage(ctx, p.Network(plan.NetPrivate).Bridge, p.Dashboard.Target, nodes)
}

// Range asks the stack's monitor for query over [start, end] at step.
func (d *Driver) Range(ctx context.Context, stack, query string, start, end time.Time, step time.Duration) ([]Series, error) {
	p, err := d.savedPlan(stack)
	if err != nil {
		return nil, err
	}
	if p.Dashboard == nil {
		return nil, fmt.Errorf("stack %s has no monitor tier; add \"monitor: {}\" under tiers and run up", stack)
	}
	return d.sys().queryRange(ctx, p.Network(plan.NetPrivate).Bridge, p.Dashboard.Target, query, start, end, step)
}

// SavedPlan is the plan the stack was last brought up with.
func (d *Driver) SavedPlan(stack string) (*plan.Plan, error) { return d.savedPlan(stack) }

// Logs prints the last lines of a node's daemon logs, and with follow keeps
// printing what they add until ctx is done. The log dir is the node's to
// write, so its files are opened beneath it and a link there is refused.
func (d *Driver) Logs(ctx context.Context, stack, node, service string, lines int, follow bool, out io.Writer) error {
	p, err := d.savedPlan(stack)
	if err != nil {
		return err
	}
	if p.Node(node) == nil {
		return fmt.Errorf("stack %s has no node %q", stack, node)
	}
	if service != "" && !serviceName.MatchString(service) {
		return fmt.Errorf("bad service name %q: want a name such as php-fpm, with no / and no .. in it", service)
	}
	dir := d.paths(stack).node(node).log()
	root, err := beneath.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node %s has no logs yet in %s", node, dir)
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	defer root.Close()
	var files []string
	if service != "" {
		files = []string{service + ".log"}
	} else {
		ents, err := root.ReadDir(".")
		if err != nil {
			return fmt.Errorf("node %s: %w", node, err)
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".log") {
				files = append(files, e.Name())
			}
		}
	}
	if len(files) == 0 {
		return fmt.Errorf("node %s has no logs yet in %s", node, dir)
	}
	// A file that is refused or unreadable does not hide the others, but
	// stops a follow: a planted link is worth the user's attention now.
	var errs []error
	offsets := map[string]int64{}
	for _, f := range files {
		name := strings.TrimSuffix(f, ".log")
		tail, size, err := lastLines(root, f, lines)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", node, err))
			continue
		}
		for _, l := range tail {
			fmt.Fprintf(out, "%s: %s\n", name, l)
		}
		offsets[f] = size
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for follow {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(300 * time.Millisecond):
		}
		for _, f := range files {
			name := strings.TrimSuffix(f, ".log")
			fh, err := root.Open(f)
			if err != nil {
				continue
			}
			info, _ := fh.Stat()
			if info.Size() < offsets[f] {
				offsets[f] = 0 // rotated
			}
			fh.Seek(offsets[f], io.SeekStart)
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				fmt.Fprintf(out, "%s: %s\n", name, sc.Text())
			}
			offsets[f] = info.Size()
			fh.Close()
		}
	}
	return nil
}

// serviceName is what a service's name may be: it names a file in the log
// dir, so it holds no slash and is not . or ...
var serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func lastLines(root *beneath.Root, name string, n int) ([]string, int64, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var all []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		all = append(all, sc.Text())
		if len(all) > n {
			all = all[1:]
		}
	}
	info, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	return all, info.Size(), sc.Err()
}

// Exec runs a command inside a node's container.
func (d *Driver) Exec(ctx context.Context, stack, node string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	p, err := d.savedPlan(stack)
	if err != nil {
		return err
	}
	n := p.Node(node)
	if n == nil {
		return fmt.Errorf("stack %s has no node %q", stack, node)
	}
	return d.sys().execContainer(ctx, n.Container, args, stdin, stdout, stderr)
}

// CACertPath is where the stack's CA certificate is written, for visitors'
// clients to trust.
func (d *Driver) CACertPath(stack string) string {
	return filepath.Join(d.paths(stack).stack, "ca.crt")
}

// certExpires is when the certificate the edge serves expires: the
// user's own, or the one from the stack's CA; zero when it cannot be read.
func (d *Driver) certExpires(p *plan.Plan) time.Time {
	var chain []byte
	if p.Publish.Certificate != "" {
		chain, _ = os.ReadFile(p.Publish.Certificate)
	} else if s, err := d.loadSecrets(p.Stack); err == nil && s != nil {
		chain = s.TLSCert
	}
	t, err := secrets.Expires(chain)
	if err != nil {
		return time.Time{}
	}
	return t
}
