package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// upPhases are the phases of an up, as enter names them, in order; the
// rollout's come after "rollout".
var upPhases = []string{"checkHost", "release", "render", "hostFiles", "bootUnit", "sandbox", "leaving", "fabric", "removeStale",
	"nodes", "outside", "syncStorage", "restartChanged", "siteMounts", "containers", "supervisor", "reload", "waitHealthy",
	"front", "waitServing", "rollout", "rollout:surge", "rollout:static", "rollout:app-1", "rollout:app-2", "rollout:app-3",
	"rollout:leave", "markApplied"}

// interruption is how one case stops an up: cancelled as phase begins
// (Ctrl-C there), or with the host op that starts with failOn failing.
type interruption struct {
	phase  string
	failOn string
}

func (i interruption) String() string {
	if i.phase != "" {
		return "cancel at " + i.phase
	}
	return "fail " + i.failOn
}

// upWith runs Up with the options the CLI gives (a surge node), stopped as
// i says; reached reports whether it got to the phase or op.
func (s *fakeStack) upWith(t *testing.T, p *plan.Plan, i interruption) (reached bool, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apps := len(p.Role("app"))
	s.phases = nil
	s.d.onPhase = func(phase string) error {
		if !slices.Contains(s.phases, phase) {
			s.phases = append(s.phases, phase)
		}
		if i.phase != "" && phase == i.phase && !reached {
			reached = true
			cancel()
		}
		return nil
	}
	defer func() { s.d.onPhase = nil }()
	s.f.failOn = i.failOn
	_, err = s.d.Up(ctx, p, UpOptions{SiteDir: s.site, Wait: time.Second, Drain: time.Millisecond, Surge: planWithApps(t, apps+1)})
	if i.failOn != "" {
		reached = s.f.failOn == ""
		s.f.failOn = ""
	}
	return reached, err
}

// pids matches the pid in a process's or keeper's line.
var pids = regexp.MustCompile(`^(process|keeper) \d+$`)

// state is what the fake host holds and what the driver keeps under its
// root, in a form two stacks that ran the same plans and site compare in:
// no pids (how often the pair was started differs), no secrets (each stack
// makes its own), and paths relative to the root.
func (s *fakeStack) state(t *testing.T, stack string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range s.f.leftovers() {
		fmt.Fprintln(&b, pids.ReplaceAllString(l, "$1"))
	}
	s.f.mu.Lock()
	for _, ns := range slices.Sorted(maps.Keys(s.f.tables)) {
		for _, name := range slices.Sorted(maps.Keys(s.f.tables[ns])) {
			fmt.Fprintf(&b, "ruleset %q %s %v\n", ns, name, *s.f.tables[ns][name])
		}
	}
	for _, id := range slices.Sorted(maps.Keys(s.f.containers)) {
		fmt.Fprintf(&b, "container %s %s\n", id, s.f.containers[id].status)
	}
	for _, k := range slices.Sorted(maps.Keys(s.f.sysctl)) {
		fmt.Fprintf(&b, "sysctl %s %d\n", k, s.f.sysctl[k])
	}
	fmt.Fprintf(&b, "boot unit %v\n", s.f.bootUnit)
	s.f.mu.Unlock()
	j, err := loadJournal(s.d.paths(stack).journal(), stack)
	if err != nil {
		t.Fatal(err)
	}
	var objs []string
	for _, o := range j.Objects {
		switch o.Kind {
		case KindProcess, KindKeeper:
			o.Name = ""
		}
		objs = append(objs, fmt.Sprintf("journal %s %s %s", o.Kind, s.f.rel(o.Name), s.f.rel(o.Detail)))
	}
	slices.Sort(objs)
	fmt.Fprintf(&b, "%s\njournal ids %v unsandboxed %v\n", strings.Join(objs, "\n"), j.IDs, j.Unsandboxed)
	idx := s.releases(t)
	fmt.Fprintf(&b, "releases live %s source %s nodes %v\n", idx.Live, idx.Source, idx.Nodes)
	for _, r := range idx.Releases {
		fmt.Fprintf(&b, "release %s %s\n", r.ID, r.State)
	}
	// The files, but those a node writes in its disk image.
	filepath.WalkDir(s.d.root(), func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := s.f.rel(path)
		if e.IsDir() && strings.HasSuffix(rel, "/vol") {
			fmt.Fprintln(&b, "file", rel)
			return fs.SkipDir
		}
		fmt.Fprintln(&b, "file", rel)
		return nil
	})
	return b.String()
}

// interruptions lists, for the up that run makes with upWith last: every
// phase it reaches, cancelled as it begins, and, for each kind of host op
// (see opKind), its first op failing.
func interruptions(t *testing.T, run func(t *testing.T, s *fakeStack) []string) []interruption {
	t.Helper()
	s := newFakeStack(t)
	ops := run(t, s)
	reached := s.phases
	var out []interruption
	for _, p := range upPhases {
		if slices.Contains(reached, p) {
			out = append(out, interruption{phase: p})
		}
	}
	for _, p := range reached {
		if !slices.Contains(upPhases, p) {
			t.Errorf("up has a phase %q that upPhases does not list", p)
		}
	}
	byKind := map[string][]string{}
	var kinds []string
	for _, op := range ops {
		kind := opKind(op)
		if kind == "runc kill" {
			// Down and a restart go on when it fails: they wait 15 s
			// for the node to stop, then delete it, which kills it.
			continue
		}
		if byKind[kind] == nil {
			kinds = append(kinds, kind)
		}
		byKind[kind] = append(byKind[kind], op)
	}
	for _, k := range kinds {
		out = append(out, interruption{failOn: byKind[k][0]})
	}
	return out
}

// opKind is what an op does, without what to: its first word, and the
// second if it says more of what ("netns add", "chown -hR"), not of what
// to ("mount n/nodes/...", "chown 268435456:...").
func opKind(op string) string {
	f := strings.Fields(op)
	if len(f) > 1 && !strings.ContainsAny(f[1], "/0123456789") {
		return f[0] + " " + f[1]
	}
	return f[0]
}

// TestUpInterrupted stops an up at each of its phases, cancelled as the
// phase begins, and at the first host op of each kind, failing.
//
// On a fresh host the up must leave the host as it found it. On a running
// stack, for each change (more app nodes and a new site: every phase, the
// rollout's included; fewer app nodes), the next up must bring the stack
// to the state an uninterrupted up leaves, and a further up must find
// nothing to do. No up may stop a node the edge still sends visitors to,
// or whose site the supervisor still mounts.
func TestUpInterrupted(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		p := planWithApps(t, 2)
		for _, i := range interruptions(t, func(t *testing.T, s *fakeStack) []string {
			if _, err := s.upWith(t, p, interruption{}); err != nil {
				t.Fatal(err)
			}
			return s.f.take()
		}) {
			// Not in parallel: a failed up of the only stack removes the
			// root only if it can take the host lock at once, and a
			// process another test forks meanwhile holds the lock's
			// descriptor, and so the lock, until it execs.
			t.Run(i.String(), func(t *testing.T) {
				s := newFakeStack(t)
				reached, err := s.upWith(t, p, i)
				if !reached {
					t.Fatalf("the up did not reach %s", i)
				}
				if err == nil {
					return // the op is tried again (a GET)
				}
				if held := s.f.leftovers(); len(held) > 0 {
					t.Errorf("the failed up (%v) left on the host: %q", err, held)
				}
				if _, err := os.Stat(s.d.root()); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the failed up of the only stack left the root: %v", err)
				}
			})
		}
	})

	for _, c := range []struct {
		name        string
		first, next int // app nodes
		newSite     bool
	}{
		{"more-apps-and-a-new-site", 2, 3, true},
		{"fewer-apps", 3, 2, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			first, next := planWithApps(t, c.first), planWithApps(t, c.next)
			// change brings s to where the interrupted up starts.
			change := func(t *testing.T, s *fakeStack) {
				s.mustUp(t, first)
				s.f.take()
				if c.newSite {
					write(t, filepath.Join(s.site, "index.php"), "<?php echo 2;")
				}
				s.checkLeaving(t, next)
			}
			ref := newFakeStack(t)
			change(t, ref)
			if _, err := ref.upWith(t, next, interruption{}); err != nil {
				t.Fatal(err)
			}
			want := ref.state(t, "n")
			for _, i := range interruptions(t, func(t *testing.T, s *fakeStack) []string {
				change(t, s)
				if _, err := s.upWith(t, next, interruption{}); err != nil {
					t.Fatal(err)
				}
				return s.f.take()
			}) {
				t.Run(i.String(), func(t *testing.T) {
					t.Parallel()
					s := newFakeStack(t)
					change(t, s)
					reached, err := s.upWith(t, next, i)
					if !reached {
						t.Fatalf("the up did not reach %s", i)
					}
					if err != nil {
						t.Logf("the up failed: %v", err)
					} // else the op was tried again (a GET)
					if _, err := s.upWith(t, next, interruption{}); err != nil {
						t.Fatalf("the up after the one that failed: %v", err)
					}
					if got := s.state(t, "n"); got != want {
						t.Errorf("after an up that failed and one that did not, the host differs from after one up:\n%s", lineDiff(strings.Split(want, "\n"), strings.Split(got, "\n")))
					}
					s.checkJournal(t, "n")
					s.f.take()
					if _, err := s.upWith(t, next, interruption{}); err != nil {
						t.Fatal(err)
					}
					if ops := s.f.take(); len(ops) > 0 {
						t.Errorf("a further up changed the host:\n%s", strings.Join(ops, "\n"))
					}
				})
			}
		})
	}
}

// checkLeaving fails the test if, from now on, s stops the container of
// an app node that p does not have while the edge's config still has the
// node in its pool, or while the supervisor runs a plan with the node (it
// would keep the node's site mounted).
func (s *fakeStack) checkLeaving(t *testing.T, p *plan.Plan) {
	t.Helper()
	ps := s.d.paths("n")
	s.f.onOp = func(line string) {
		id, ok := strings.CutPrefix(line, "runc kill ")
		if !ok {
			return
		}
		id, _, _ = strings.Cut(id, " ")
		node := strings.TrimPrefix(id, "bh-n-")
		if !strings.HasPrefix(node, "app-") || p.Node(node) != nil {
			return
		}
		addr := planWithApps(t, 4).Node(node).Ifaces[0].Addr.String()
		if conf, _ := os.ReadFile(filepath.Join(ps.node("edge").conf(), "nginx.conf")); strings.Contains(string(conf), "server "+addr+":") {
			t.Errorf("%s stopped while the edge still sends it visitors", node)
		}
		plan, _ := os.ReadFile(ps.plan())
		if sup, _ := os.ReadFile(ps.supervised()); string(sup) != digest(plan) {
			t.Errorf("%s stopped while the supervisor still runs an older plan", node)
		}
	}
}
