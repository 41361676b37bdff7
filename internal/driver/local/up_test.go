package local

import (
	"context"
	"errors"
	"flag"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/kernel"
	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/release"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ops")

// fakeStack is a driver on a fake host (fakeSystem), under a temporary
// root, with a site of three files.
type fakeStack struct {
	d    *Driver
	f    *fakeSystem
	site string
	// phases are those the last upWith entered, in order.
	phases []string
}

func newFakeStack(t *testing.T) *fakeStack {
	t.Helper()
	root := filepath.Join(tempDir(t), "root")
	f := newFakeSystem(root)
	site := t.TempDir()
	write(t, filepath.Join(site, "index.php"), "<?php echo 1;")
	write(t, filepath.Join(site, "assets/style.css"), "body{}")
	write(t, filepath.Join(site, "uploads/.keep"), "")
	// One node at a time, so that ops come in the order the golden
	// files hold; TestUpParallel checks that many at once make the same.
	return &fakeStack{d: &Driver{Root: root, system: f, workers: 1}, f: f, site: site}
}

// tempDir is a temporary directory on tmpfs where the host has one. The
// journal is synced to disk at every record (writeDurable), which costs
// about 10 ms a time on a disk, and an up records some hundred times.
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "bulkhead-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// up runs Up and returns the host changes it made.
func (s *fakeStack) up(t *testing.T, p *plan.Plan) ([]string, *UpResult, error) {
	t.Helper()
	res, err := s.d.Up(context.Background(), p, UpOptions{SiteDir: s.site, Wait: time.Second})
	return s.f.take(), res, err
}

// deploy runs Up with a surge plan of one more app node, as the CLI does.
func (s *fakeStack) deploy(t *testing.T, apps int) ([]string, *UpResult, error) {
	t.Helper()
	res, err := s.d.Up(context.Background(), planWithApps(t, apps), UpOptions{SiteDir: s.site, Wait: time.Second, Drain: time.Millisecond, Surge: planWithApps(t, apps+1)})
	return s.f.take(), res, err
}

// releases is the stack's release index.
func (s *fakeStack) releases(t *testing.T) *release.Index {
	t.Helper()
	idx, err := s.d.Releases(context.Background(), "n")
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// prefixes is each of ops cut to the length of the want at its place.
func prefixes(ops, want []string) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		if i < len(want) && strings.HasPrefix(o, want[i]) {
			o = want[i]
		}
		out[i] = o
	}
	return out
}

func (s *fakeStack) mustUp(t *testing.T, p *plan.Plan) ([]string, *UpResult) {
	t.Helper()
	ops, res, err := s.up(t, p)
	if err != nil {
		t.Fatalf("up: %v\nops:\n%s", err, strings.Join(ops, "\n"))
	}
	return ops, res
}

func (s *fakeStack) mustDown(t *testing.T, stack string) []string {
	t.Helper()
	if err := s.d.Down(context.Background(), stack, false); err != nil {
		t.Fatalf("down: %v", err)
	}
	return s.f.take()
}

// journal is what the stack's journal records now; none when it is gone.
func (s *fakeStack) journal(t *testing.T, stack string) []Object {
	t.Helper()
	j, err := loadJournal(s.d.paths(stack).journal(), stack)
	if err != nil {
		t.Fatal(err)
	}
	return j.Objects
}

// journalIDs is the stack's id blocks, as its journal records them.
func (s *fakeStack) journalIDs(t *testing.T, stack string) map[string]uint32 {
	t.Helper()
	j, err := loadJournal(s.d.paths(stack).journal(), stack)
	if err != nil {
		t.Fatal(err)
	}
	return j.IDs
}

// checkJournal fails unless the journal records exactly what the fake
// host holds.
func (s *fakeStack) checkJournal(t *testing.T, stack string) {
	t.Helper()
	var recorded []string
	for _, o := range s.journal(t, stack) {
		switch o.Kind {
		case KindNftTable:
			recorded = append(recorded, "nft host "+o.Name)
		case KindMount:
			recorded = append(recorded, "site mount point "+s.f.rel(o.Name))
		case KindVolume:
			recorded = append(recorded, "volume "+s.f.rel(o.Name))
		case KindSysctl:
		default:
			recorded = append(recorded, o.Kind+" "+o.Name)
		}
	}
	slices.Sort(recorded)
	if held := s.f.leftovers(); !slices.Equal(recorded, held) {
		t.Errorf("the journal records:\n\t%s\nthe host holds:\n\t%s", strings.Join(recorded, "\n\t"), strings.Join(held, "\n\t"))
	}
}

// golden compares ops with testdata/ops/NAME, or rewrites it with -update.
func golden(t *testing.T, name string, ops []string) {
	t.Helper()
	path := filepath.Join("testdata", "ops", name)
	got := strings.Join(ops, "\n") + "\n"
	if len(ops) == 0 {
		got = ""
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("host operations differ from %s (-update rewrites it):\n%s", path, lineDiff(strings.Split(string(want), "\n"), strings.Split(got, "\n")))
	}
}

// lineDiff shows the lines only want has (-) and only got has (+).
func lineDiff(want, got []string) string {
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	if b.Len() == 0 {
		return "(the same lines, in another order)"
	}
	return b.String()
}

// matching returns the ops that start with one of prefixes.
func matching(ops []string, prefixes ...string) []string {
	var out []string
	for _, op := range ops {
		for _, p := range prefixes {
			if strings.HasPrefix(op, p) {
				out = append(out, op)
				break
			}
		}
	}
	return out
}

// withSuffix returns the strings that end in suffix.
func withSuffix(list []string, suffix string) []string {
	var out []string
	for _, s := range list {
		if strings.HasSuffix(s, suffix) {
			out = append(out, s)
		}
	}
	return out
}

// names returns the word at index i of each op.
func names(ops []string, i int) []string {
	var out []string
	for _, op := range ops {
		if f := strings.Fields(op); len(f) > i {
			out = append(out, f[i])
		}
	}
	return out
}

// TestUpOnFakeHost runs up and down on a fake host and compares the
// operations each step asks of the host with a golden file, one per case;
// each case then checks what the host holds after.
func TestUpOnFakeHost(t *testing.T) {
	for _, tc := range []struct {
		name string
		// run does what the case is about and returns the ops to compare
		// with testdata/ops/NAME.
		run func(t *testing.T, s *fakeStack) []string
	}{
		{"up-fresh", func(t *testing.T, s *fakeStack) []string {
			ops, res := s.mustUp(t, planWithApps(t, 2))
			if !res.Changed || !slices.Equal(res.Restarted, []string{"storage", "cache", "db", "static", "app-1", "app-2", "edge"}) || res.Synced != 1 {
				t.Errorf("result %+v; want changed, every node started in order, the one file the site ships in uploads put on storage", res)
			}
			stored := filepath.Join(s.d.paths("n").node("storage").data(), "site")
			if got, want := listTree(t, stored), []string{".", "uploads", "uploads/.keep"}; !slices.Equal(got, want) {
				t.Errorf("storage holds %q, want %q: the writable path and no code", got, want)
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"publish-beyond-loopback", func(t *testing.T, s *fakeStack) []string {
			// http on an address of the host's: the edge gets a route to
			// answer visitors, the host forwards on the address's
			// interface and the public bridge, and down puts the
			// interface's setting back. Another stack may not publish
			// there too.
			s.f.sysctl["conf/eth0/forwarding"] = 0
			src := "name: n\npublish: {http: 192.0.2.10:8080}\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 1}\n"
			ops, _ := s.mustUp(t, planFrom(t, src))
			other := strings.Replace(strings.Replace(src, "name: n\n", "name: n-2\nnetworks: {private: 10.78.0.0/24, public: 10.78.1.0/28}\n", 1), "}\ntiers", ", https: 127.0.0.1:18443}\ntiers", 1)
			if _, _, err := s.up(t, planFrom(t, other)); err == nil || !strings.Contains(err.Error(), "cannot publish on 192.0.2.10:8080: stack n publishes there") {
				t.Errorf("a second stack on the same published address: %v, want refused", err)
			}
			s.f.take()
			ops = append(ops, s.mustDown(t, "n")...)
			if got := s.f.sysctl["conf/eth0/forwarding"]; got != 0 {
				t.Errorf("forwarding on eth0 after down: %d, want the 0 up found", got)
			}
			// Down, n publishes no more, though its plan stays.
			if _, _, err := s.up(t, planFrom(t, other)); err != nil {
				t.Errorf("a second stack on the address of one that is down: %v", err)
			}
			s.f.take()
			return ops
		}},
		{"mail-egress", func(t *testing.T, s *fakeStack) []string {
			// The mail relay's smarthost: the host forwards on the
			// private bridge and on the interface toward the smarthost,
			// the relay gets a route to that one address, and down puts
			// the interface's setting back. Without a smarthost, an up
			// takes the route away.
			s.f.sysctl["conf/eth0/forwarding"] = 0
			src := "name: n\ntiers:\n  edge: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 1}\n  mail: {}\n"
			ops, _ := s.mustUp(t, planFrom(t, src+"mail: {smarthost: 192.0.2.25:587}\n"))
			if got := s.f.sysctl["conf/eth0/forwarding"]; got != 1 {
				t.Errorf("forwarding on eth0 with a smarthost: %d, want 1", got)
			}
			again, _ := s.mustUp(t, planFrom(t, src))
			ops = append(ops, again...)
			ops = append(ops, s.mustDown(t, "n")...)
			if got := s.f.sysctl["conf/eth0/forwarding"]; got != 0 {
				t.Errorf("forwarding on eth0 after down: %d, want the 0 up found", got)
			}
			return ops
		}},
		{"publish-beyond-loopback-two-stacks", func(t *testing.T, s *fakeStack) []string {
			// Two stacks publish on one interface of the host's: the
			// first raises its forwarding, the second needs it as well.
			// Whichever goes down first leaves it on for the other; the
			// last puts back the 0 the first found.
			s.f.sysctl["conf/eth0/forwarding"] = 0
			src := "name: n\npublish: {http: 192.0.2.10:8080, https: 127.0.0.1:18443}\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 1}\n"
			other := strings.Replace(strings.Replace(src, "name: n\n", "name: n-2\nnetworks: {private: 10.78.0.0/24, public: 10.78.1.0/28}\n", 1), "192.0.2.10:8080, https: 127.0.0.1:18443", "192.0.2.10:8081, https: 127.0.0.1:18444", 1)
			var ops []string
			for _, first := range []string{"n", "n-2"} {
				s.mustUp(t, planFrom(t, src))
				s.mustUp(t, planFrom(t, other))
				second := map[string]string{"n": "n-2", "n-2": "n"}[first]
				s.f.take()
				ops = append(ops, s.mustDown(t, first)...)
				if got := s.f.sysctl["conf/eth0/forwarding"]; got != 1 {
					t.Errorf("forwarding on eth0 after %s went down and %s still publishes there: %d, want 1", first, second, got)
				}
				s.mustDown(t, second)
				if got := s.f.sysctl["conf/eth0/forwarding"]; got != 0 {
					t.Errorf("forwarding on eth0 after both stacks went down: %d, want the 0 the first up found", got)
				}
			}
			return ops
		}},
		{"up-again", func(t *testing.T, s *fakeStack) []string {
			p := planWithApps(t, 2)
			s.mustUp(t, p)
			ops, res := s.mustUp(t, p)
			if res.Changed || len(res.Restarted) > 0 {
				t.Errorf("a second up with the same plan: %+v, want no change", res)
			}
			if len(ops) > 0 {
				t.Errorf("a second up with the same plan changed the host:\n%s", strings.Join(ops, "\n"))
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"up-after-a-node-died", func(t *testing.T, s *fakeStack) []string {
			// A dead container makes up apply the plan again: it
			// re-asserts the fabric, which changes nothing, and starts
			// only the dead node.
			p := planWithApps(t, 2)
			s.mustUp(t, p)
			s.f.containers["bh-n-db"].status = "stopped"
			ops, res := s.mustUp(t, p)
			if !slices.Equal(res.Restarted, []string{"db"}) {
				t.Errorf("restarted %q, want only db", res.Restarted)
			}
			if got := matching(ops, "runc run", "runc delete", "netns delete", "link delete", "mkfs", "start", "kill"); !slices.Equal(got, []string{"runc delete bh-n-db", "runc run bh-n-db"}) {
				t.Errorf("changes beyond restarting db: %q", got)
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"up-after-an-anti-spoofing-hole", func(t *testing.T, s *fakeStack) []string {
			// verify --self-test takes a node out of the host's
			// anti-spoofing set; killed before it puts it back, it
			// leaves the table there but short, and up restores it.
			p := planWithApps(t, 2)
			s.mustUp(t, p)
			table := s.f.tables[""]["bridge "+p.HostNFT]
			set := "bridge " + p.HostNFT + " nodes"
			table.Sets[set] = table.Sets[set][1:]
			ops, res := s.mustUp(t, p)
			if len(res.Restarted) > 0 {
				t.Errorf("restarted %q, want nothing", res.Restarted)
			}
			if got := matching(ops, "nft apply host"); len(got) != 1 {
				t.Errorf("host table applied %d times, want once: %q", len(got), got)
			}
			want := 0
			for _, n := range p.Nodes {
				want += len(n.Ifaces)
			}
			if got := len(s.f.tables[""]["bridge "+p.HostNFT].Sets[set]); got != want {
				t.Errorf("after up the anti-spoofing set holds %d interfaces, want %d", got, want)
			}
			return ops
		}},
		{"up-replaces-a-supervisor-without-its-keeper", func(t *testing.T, s *fakeStack) []string {
			// A supervisor without its keeper (started by a bulkhead
			// before keepers): up replaces the pair, the keeper's
			// record first, and touches no node.
			p := planWithApps(t, 2)
			s.mustUp(t, p)
			for pid, kind := range s.f.procs {
				if kind == KindKeeper {
					delete(s.f.procs, pid)
				}
			}
			ops, res := s.mustUp(t, p)
			want := []string{"kill 4002", "kill 4001", "start n/bin/bulkhead supervise --stack n --root $ROOT --paired", "start n/bin/bulkhead keep --stack n --root $ROOT"}
			if got := matching(ops, "kill", "start", "runc run", "runc delete"); !slices.Equal(got, want) {
				t.Errorf("up on a supervisor without its keeper: %q, want %q", got, want)
			}
			if len(res.Restarted) > 0 {
				t.Errorf("restarted %q, want no node", res.Restarted)
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"up-counts-a-supervisor-its-keeper-started", func(t *testing.T, s *fakeStack) []string {
			// The supervisor died and its keeper started another, which
			// it has not recorded yet (a verify held the stack's lock):
			// status says the supervisor runs, and up records it and
			// has nothing to do.
			p := planWithApps(t, 2)
			s.mustUp(t, p)
			pid := s.f.replace(KindProcess)
			st, err := s.d.Status(context.Background(), "n")
			if err != nil || !st.Supervisor || !st.Keeper {
				t.Errorf("status: %+v, %v; want the supervisor and its keeper running", st, err)
			}
			ops, res := s.mustUp(t, p)
			if res.Changed || len(ops) > 0 {
				t.Errorf("up changed %v:\n%s", res.Changed, strings.Join(ops, "\n"))
			}
			if !slices.Contains(s.journal(t, "n"), Object{Kind: KindProcess, Name: pid, Detail: "fake"}) {
				t.Errorf("the journal does not record supervisor %s", pid)
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"down-stops-a-keeper-not-yet-recorded", func(t *testing.T, s *fakeStack) []string {
			// The keeper died and the supervisor started another, which
			// it has not recorded yet: down stops that one too.
			s.mustUp(t, planWithApps(t, 2))
			pid := s.f.replace(KindKeeper)
			ops := s.mustDown(t, "n")
			if held := s.f.leftovers(); len(held) > 0 {
				t.Errorf("down left on the host: %q", held)
			}
			if got := matching(ops, "kill"); !slices.Equal(got, []string{"kill " + pid, "kill 4001"}) {
				t.Errorf("down stopped %q; want the new keeper %s, then the supervisor", got, pid)
			}
			return ops
		}},
		{"status", func(t *testing.T, s *fakeStack) []string {
			s.mustUp(t, planWithApps(t, 2))
			st, err := s.d.Status(context.Background(), "n")
			if err != nil || !st.Healthy() || len(st.Nodes) != 7 {
				t.Fatalf("status after up: %+v, %v; want 7 healthy nodes and the supervisor", st, err)
			}
			s.f.containers["bh-n-cache"].status = "stopped"
			st, err = s.d.Status(context.Background(), "n")
			if err != nil || st.Healthy() || st.Nodes[2].Name != "cache" || st.Nodes[2].State != "stopped" {
				t.Errorf("status with cache stopped: %+v, %v", st, err)
			}
			return s.f.take() // asking changes nothing
		}},
		{"down", func(t *testing.T, s *fakeStack) []string {
			p := planWithApps(t, 2)
			made, _ := s.mustUp(t, p)
			ops := s.mustDown(t, "n")
			if held := s.f.leftovers(); len(held) > 0 {
				t.Errorf("down left on the host: %q", held)
			}
			if objs := s.journal(t, "n"); len(objs) > 0 {
				t.Errorf("down left in the journal: %+v", objs)
			}
			// Within a kind, the last made goes first.
			veths, bridges := names(matching(made, "veth add "), 2), names(matching(made, "bridge add "), 2)
			unmounted := names(matching(ops, "umount "), 1)
			for _, c := range []struct {
				what      string
				made, got []string
			}{
				{"containers", names(matching(made, "runc run "), 2), names(matching(ops, "runc delete "), 2)},
				{"site mount points", names(matching(made, "mount --bind"), 3), withSuffix(unmounted, "/srv")},
				{"disk images", names(matching(made, "mount n/"), 3), withSuffix(unmounted, "/vol")},
				{"namespaces", names(matching(made, "netns add "), 2), names(matching(ops, "netns delete "), 2)},
				{"links", append(bridges, veths...), names(matching(ops, "link delete "), 2)},
			} {
				want := slices.Clone(c.made)
				slices.Reverse(want)
				if !slices.Equal(c.got, want) {
					t.Errorf("down removed %s in the order %q; want %q, the reverse of up's", c.what, c.got, want)
				}
			}
			// The data stays: the next up finds the disk images.
			again, _ := s.mustUp(t, p)
			if mkfs := matching(again, "mkfs"); len(mkfs) > 0 {
				t.Errorf("an up after down made disks afresh: %q", mkfs)
			}
			if _, err := os.Stat(filepath.Join(s.d.paths("n").secrets(), "secrets.json")); err != nil {
				t.Errorf("down lost the secrets: %v", err)
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"down-with-a-damaged-journal", func(t *testing.T, s *fakeStack) []string {
			// The journal cut short: down finds what the stack has on
			// the host by its names, says so, and removes all of it and
			// nothing of stack n-2, whose names start as n's do.
			p := planWithApps(t, 2)
			s.mustUp(t, p)
			ids := s.journalIDs(t, "n")
			other := planFrom(t, "name: n-2\nnetworks: {private: 10.78.0.0/24, public: 10.78.1.0/28}\npublish: {http: 127.0.0.1:18080, https: 127.0.0.1:18443}\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {protocol: sftp}\n  app: {replicas: 2}\n")
			s.mustUp(t, other)
			s.f.take()
			path := s.d.paths("n").journal()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data[:len(data)/2], 0o600); err != nil {
				t.Fatal(err)
			}
			var said strings.Builder
			s.d.Progress = &said
			if err := s.d.Down(context.Background(), "n", false); err != nil {
				t.Fatalf("down with a damaged journal: %v\n%s", err, said.String())
			}
			ops := s.f.take()
			for _, w := range []string{"cannot be read", "finding the stack's objects by their names", path + ".damaged",
				"found by name: 1 supervisor keeper, 1 supervisor process, 7 containers, 3 mounts, 7 disk images, 8 network namespaces, 9 veth pairs, 2 bridges, 3 host nft tables"} {
				if !strings.Contains(said.String(), w) {
					t.Errorf("down did not say %q:\n%s", w, said.String())
				}
			}
			// What is left is n-2's, all of it.
			s.checkJournal(t, "n-2")
			if objs := s.journal(t, "n"); len(objs) > 0 {
				t.Errorf("down left in n's new journal: %+v", objs)
			}
			if got := s.journalIDs(t, "n"); !maps.Equal(got, ids) {
				t.Errorf("n's id blocks after down: %v, want %v, as the nodes' roots say", got, ids)
			}
			if kept, err := os.ReadFile(path + ".damaged"); err != nil || len(kept) != len(data)/2 {
				t.Errorf("the damaged journal is not kept: %v", err)
			}
			// The next up finds the data, and makes what the plan has.
			again, _ := s.mustUp(t, p)
			if mkfs := matching(again, "mkfs"); len(mkfs) > 0 {
				t.Errorf("an up after down made disks afresh: %q", mkfs)
			}
			if got := s.journalIDs(t, "n"); !maps.Equal(got, ids) {
				t.Errorf("n's id blocks after up: %v, want %v", got, ids)
			}
			return ops
		}},
		{"scale-down", func(t *testing.T, s *fakeStack) []string {
			s.mustUp(t, planWithApps(t, 3))
			p := planWithApps(t, 2)
			ops, _ := s.mustUp(t, p)
			app3 := planWithApps(t, 3).Node("app-3")
			want := []string{"runc kill " + app3.Container + " TERM", "runc delete " + app3.Container,
				"fusermount -u n/nodes/app-3/srv/shared", "fusermount -u n/nodes/app-3/srv/site", "umount n/nodes/app-3/srv", "fusermount -u n/nodes/app-3/sshfs", "netns delete " + app3.Netns}
			for _, i := range app3.Ifaces {
				want = append(want, "link delete "+i.Host)
			}
			removed := matching(ops, "runc kill", "fusermount", "umount", "netns delete", "link delete")
			removed = append(removed, matching(ops, "runc delete "+app3.Container)...)
			slices.Sort(removed)
			slices.Sort(want)
			if !slices.Equal(removed, want) {
				t.Errorf("scaling app from 3 to 2 removed\n\t%s\nwant app-3's container, site mount, namespace and veths:\n\t%s", strings.Join(removed, "\n\t"), strings.Join(want, "\n\t"))
			}
			for _, l := range s.f.leftovers() {
				if strings.Contains(l, "app-3") && !strings.HasPrefix(l, "volume ") {
					t.Errorf("app-3 left on the host: %s", l)
				}
			}
			s.checkJournal(t, "n")
			return ops
		}},
		{"up-refuses-a-foreign-bridge", func(t *testing.T, s *fakeStack) []string {
			// Another's interface where the stack's bridge would go:
			// preflight says so, and nothing is made.
			s.f.bridges["n-pri"] = netip.MustParsePrefix("192.168.9.1/24")
			ops, _, err := s.up(t, planWithApps(t, 2))
			if err == nil || !strings.Contains(err.Error(), "interface n-pri exists but was not made by this stack") {
				t.Errorf("up: %v, want preflight's refusal", err)
			}
			delete(s.f.bridges, "n-pri")
			if held := s.f.leftovers(); len(held) > 0 {
				t.Errorf("a refused up left on the host: %q", held)
			}
			return ops
		}},
		{"up-refuses-unfiltered-bridges", func(t *testing.T, s *fakeStack) []string {
			// Without br_netfilter the host's flow table would filter
			// nothing between nodes: preflight says so, and nothing
			// is made.
			s.f.bridgeFilterErr = kernel.ErrNoBridgeNetfilter
			ops, _, err := s.up(t, planWithApps(t, 2))
			if !errors.Is(err, kernel.ErrNoBridgeNetfilter) {
				t.Errorf("up: %v, want preflight's refusal", err)
			}
			s.f.bridgeFilterErr = nil
			if held := s.f.leftovers(); len(held) > 0 {
				t.Errorf("a refused up left on the host: %q", held)
			}
			return ops
		}},
		{"up-refuses-php-that-does-not-parse", func(t *testing.T, s *fakeStack) []string {
			// A running stack, then a site change with a syntax error:
			// up names it and changes nothing, storage included, where
			// a sync would remove the code an older stack left.
			s.up(t, planWithApps(t, 2))
			stored := filepath.Join(s.d.paths("n").node("storage").data(), "site")
			write(t, filepath.Join(stored, "index.php"), "<?php echo 'old';")
			before := treeState(t, stored)
			write(t, filepath.Join(s.site, "index.php"), "<?php echo (;")
			ops, _, err := s.up(t, planWithApps(t, 2))
			if err == nil || !strings.Contains(err.Error(), "index.php: Parse error") || !strings.Contains(err.Error(), "up changed nothing") {
				t.Errorf("up: %v, want index.php refused with PHP's message", err)
			}
			if after := treeState(t, stored); after != before {
				t.Errorf("a refused up changed storage:\nbefore:\n%safter:\n%s", before, after)
			}
			return ops
		}},
		{"deploy-one-node-at-a-time", func(t *testing.T, s *fakeStack) []string {
			// A changed site rolls out: the surge node app-3 with the new
			// release, checked before it joins; static reloads; each app
			// node out of the pool, restarted, checked, re-verified,
			// back in; app-3 leaves.
			s.mustUp(t, planWithApps(t, 2))
			first := s.releases(t).Live
			write(t, filepath.Join(s.site, "index.php"), "<?php echo 2;")
			ops, res, err := s.deploy(t, 2)
			if err != nil {
				t.Fatalf("deploy: %v", err)
			}
			idx := s.releases(t)
			if res.Release == "" || idx.Live != res.Release || idx.Live == first || idx.Source != idx.Live || len(idx.Nodes) != 0 {
				t.Errorf("after the deploy: result %+v, index %+v; want the new release live everywhere", res, idx)
			}
			steps := matching(ops, "get ", "verify ", "runc run ", "runc delete ")
			want := []string{
				"runc run bh-n-app-3", "get http://10.77.0.9:80/healthz", "get http://10.77.0.9:80/",
				"runc delete bh-n-app-1", "runc run bh-n-app-1", "get http://10.77.0.7:80/healthz", "get http://10.77.0.7:80/", "verify app-1",
				"runc delete bh-n-app-2", "runc run bh-n-app-2", "get http://10.77.0.8:80/healthz", "get http://10.77.0.8:80/", "verify app-2",
				"runc delete bh-n-app-3",
			}
			if got := prefixes(steps, want); !slices.Equal(got, want) {
				t.Errorf("the rollout's steps:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
			for _, n := range []string{"app-1", "app-2", "static"} {
				conf, _ := os.ReadFile(filepath.Join(s.d.paths("n").node(n).conf(), map[bool]string{true: "apache2.conf", false: "lighttpd.conf"}[n != "static"]))
				if !strings.Contains(string(conf), "/srv/releases/"+idx.Live) || strings.Contains(string(conf), "/srv/releases/"+first) {
					t.Errorf("%s's config does not serve release %s only", n, idx.Live)
				}
			}
			return ops
		}},
		{"deploy-that-fails-rolls-back", func(t *testing.T, s *fakeStack) []string {
			// The new release answers 500 on the surge node: it never
			// joins the pool, goes, and the release is marked failed.
			s.mustUp(t, planWithApps(t, 2))
			first := s.releases(t).Live
			write(t, filepath.Join(s.site, "index.php"), "<?php http_response_code(500);")
			s.f.siteStatus = func(url string) int { return 500 }
			ops, _, err := s.deploy(t, 2)
			if err == nil || !strings.Contains(err.Error(), "app-3 answered GET /healthz with 500") || !strings.Contains(err.Error(), "fake failure") || !strings.Contains(err.Error(), "went back to "+first) {
				t.Errorf("deploy of a failing release: %v", err)
			}
			idx := s.releases(t)
			if idx.Live != first || len(idx.Nodes) != 0 || idx.Releases[len(idx.Releases)-1].State != release.Failed {
				t.Errorf("after the failed deploy: %+v; want %s live and the new release failed", idx, first)
			}
			if got := matching(ops, "runc delete "); !slices.Equal(got, []string{"runc delete bh-n-app-3"}) {
				t.Errorf("the failed deploy restarted %q; want only the surge node removed", got)
			}
			if _, ok := s.f.containers["bh-n-app-3"]; ok {
				t.Errorf("the surge node is still there")
			}
			return ops
		}},
		{"purge-restores-the-host", func(t *testing.T, s *fakeStack) []string {
			// Up installs nginx and php8.2-fpm, which were missing, and
			// disables the host's own units of them, and no other; the
			// last purge enables them again and removes the boot unit.
			s.f.missing = []string{"nginx", "php8.2-fpm"}
			made, _ := s.mustUp(t, planWithApps(t, 2))
			want := []string{"systemctl disable nginx.service", "systemctl disable php8.2-fpm.service"}
			if got := matching(made, "systemctl "); !slices.Equal(got, want) {
				t.Errorf("up changed the host's units: %q; want %q: those of the packages it installed, no other", got, want)
			}
			if !s.f.bootUnit {
				t.Errorf("up installed no boot unit")
			}
			if err := s.d.Down(context.Background(), "n", true); err != nil {
				t.Fatal(err)
			}
			purged := s.f.take()
			for _, w := range []string{"boot unit removed", "systemctl enable nginx.service", "systemctl enable php8.2-fpm.service"} {
				if !slices.Contains(purged, w) {
					t.Errorf("the last purge did not %q: %q", w, purged)
				}
			}
			if s.f.bootUnit {
				t.Errorf("the last purge left the boot unit")
			}
			if _, err := os.Stat(s.d.paths("").hostRecord()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the last purge left the host record: %v", err)
			}
			return made
		}},
		{"dry-run-changes-nothing", func(t *testing.T, s *fakeStack) []string {
			// What up would do for 2 -> 3 app nodes, without doing it:
			// the new node, reloads for the edge and the database's
			// grants, storage's keys live (sshd reads them at each login
			// and its config does not change with the pool), the rest
			// live or untouched.
			s.mustUp(t, planWithApps(t, 2))
			changes, err := s.d.Changes(context.Background(), planWithApps(t, 3), s.site)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, c := range changes {
				got[c.Node] = c.Action
			}
			want := map[string]string{"edge": "reload", "static": "none", "cache": "live", "db": "reload", "storage": "live", "app-1": "none", "app-2": "none", "app-3": "create"}
			if !maps.Equal(got, want) {
				t.Errorf("changes %v, want %v", got, want)
			}
			// And back: app-3 would be drained and removed.
			s.mustUp(t, planWithApps(t, 3))
			changes, err = s.d.Changes(context.Background(), planWithApps(t, 2), s.site)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(changes, func(c Change) bool { return c.Node == "app-3" && c.Action == "remove" }) {
				t.Errorf("scaling back: %+v; want app-3 removed", changes)
			}
			// A changed site: a deploy, naming the files, and no release
			// made.
			releases := listTree(t, s.d.paths("n").releases())
			write(t, filepath.Join(s.site, "lib.php"), "<?php")
			changes, err = s.d.Changes(context.Background(), planWithApps(t, 3), s.site)
			if err != nil {
				t.Fatal(err)
			}
			if c := changes[0]; c.Node != "site" || c.Action != "deploy" || len(c.Files) != 2 || c.Files[1] != "lib.php" {
				t.Errorf("a changed site: %+v; want a deploy of lib.php first", changes)
			}
			if after := listTree(t, s.d.paths("n").releases()); !slices.Equal(after, releases) {
				t.Errorf("a dry run made a release: %q, was %q", after, releases)
			}
			return s.f.take() // what Changes did on the host: nothing
		}},
		{"up-fails-on-a-fresh-host", func(t *testing.T, s *fakeStack) []string {
			// The fifth node in start order fails to start.
			s.f.failOn = "runc run bh-n-app-1"
			ops, _, err := s.up(t, planWithApps(t, 2))
			if err == nil || !strings.Contains(err.Error(), "app-1") {
				t.Errorf("up: %v, want app-1's failure", err)
			}
			if held := s.f.leftovers(); len(held) > 0 {
				t.Errorf("the failed up left on the host: %q", held)
			}
			if _, err := os.Stat(s.d.paths("n").journal()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed up left its journal: %v", err)
			}
			if _, err := os.Stat(s.d.root()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed up of the only stack left the root: %v", err)
			}
			return ops
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, tc.name, tc.run(t, newFakeStack(t)))
		})
	}
}
