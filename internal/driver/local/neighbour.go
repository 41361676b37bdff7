package local

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// The kernel's IPv4 neighbour (ARP) table is one table for every network
// namespace on the host, and gc_thresh3 caps its entries (1024 by
// default). A node holds an entry for every peer it talks to and the peer
// one for it, so a stack of 100 app nodes needs about a thousand: past the
// cap the kernel logs "neighbor table overflow" and drops packets to peers
// it cannot add, and a flow the plan allows fails at random. verify found
// this at 106 nodes.
var neighDir = "/proc/sys/net/ipv4/neigh/default/" // a variable for tests

// neighbourNeed estimates the entries a stack holds: two per pair of nodes
// that talk, and two per node for the host, which reaches every node
// (verify) and the edge (the published ports).
func neighbourNeed(p *plan.Plan) int {
	pairs := map[[2]string]bool{}
	for _, c := range p.Matrix.Allow {
		if c.From != spec.Outside {
			a, b := c.From, c.To
			if b < a {
				a, b = b, a
			}
			pairs[[2]string{a, b}] = true
		}
	}
	return 2*len(pairs) + 2*(len(p.Nodes)+1)
}

// neighbourRoom makes sure the host's neighbour table has room for p twice
// over, raising gc_thresh3 (and gc_thresh2, where garbage collection
// starts) in steps of 1024 when it is too small. It never lowers them. The
// journal keeps each value it found, and down puts it back.
func (d *Driver) neighbourRoom(p *plan.Plan, j *journal) error {
	for _, s := range neighbourWant(p) {
		cur, err := d.sys().readSysctl(s.key)
		if err != nil {
			return err
		}
		if cur >= s.want {
			if err := d.shareSysctl(j, s.key, cur); err != nil {
				return err
			}
			continue
		}
		before := cur
		if o, ok := d.otherSysctl(j.Stack, s.key); ok {
			before, _, _ = parseSysctl(o.Detail)
		}
		for _, o := range j.list(KindSysctl) {
			if o.Name == s.key {
				before, _, _ = parseSysctl(o.Detail)
				if err := j.forget(o); err != nil {
					return err
				}
			}
		}
		if err := j.record(Object{Kind: KindSysctl, Name: s.key, Detail: fmt.Sprintf("%d %d", before, s.want)}); err != nil {
			return err
		}
		d.progress("raising net.ipv4.neigh.default.%s from %d to %d for %d nodes", s.key, cur, s.want, len(p.Nodes))
		if err := d.sys().writeSysctl(s.key, s.want); err != nil {
			return fmt.Errorf("raise net.ipv4.neigh.default.%s to %d: %w", s.key, s.want, err)
		}
	}
	return nil
}

type limit struct {
	key  string
	want int
}

func neighbourWant(p *plan.Plan) []limit {
	want3 := (2*neighbourNeed(p) + 1023) / 1024 * 1024
	return []limit{{"gc_thresh3", want3}, {"gc_thresh2", want3 / 2}}
}

// hasNeighbourRoom reports whether the limits already fit p.
func (d *Driver) hasNeighbourRoom(p *plan.Plan) bool {
	for _, s := range neighbourWant(p) {
		if cur, err := d.sys().readSysctl(s.key); err != nil || cur < s.want {
			return false
		}
	}
	return true
}

// The host's settings are one for every stack: a second stack's up may
// find a setting the first raised, and need it as much. It then records
// the setting too, with the value found before the first raised it, and
// the value it needs now. Only the last stack whose journal records a
// setting puts it back: the first down leaves it to the others.

// otherSysctl returns another stack's record of the host setting key.
func (d *Driver) otherSysctl(stack, key string) (Object, bool) {
	ents, _ := os.ReadDir(d.root())
	for _, e := range ents {
		if !e.IsDir() || e.Name() == stack {
			continue
		}
		j, err := loadJournal(d.paths(e.Name()).journal(), e.Name())
		if err != nil {
			continue
		}
		for _, o := range j.list(KindSysctl) {
			if o.Name == key {
				return o, true
			}
		}
	}
	return Object{}, false
}

// shareSysctl records in j the host setting key, which is cur already as
// the stack needs it, if another stack raised it: whichever of the two
// goes down last puts it back.
func (d *Driver) shareSysctl(j *journal, key string, cur int) error {
	other, ok := d.otherSysctl(j.Stack, key)
	if !ok {
		return nil
	}
	for _, o := range j.list(KindSysctl) {
		if o.Name == key {
			return nil // recorded already
		}
	}
	before, _, err := parseSysctl(other.Detail)
	if err != nil {
		return err
	}
	return j.record(Object{Kind: KindSysctl, Name: key, Detail: fmt.Sprintf("%d %d", before, cur)})
}

// restoreSysctl puts back the value a stack's up found, unless something
// else has changed it since, or another stack still records it (see
// shareSysctl).
func (d *Driver) restoreSysctl(stack string, o Object) error {
	if _, ok := d.otherSysctl(stack, o.Name); ok {
		return nil
	}
	before, set, err := parseSysctl(o.Detail)
	if err != nil {
		return err
	}
	cur, err := d.sys().readSysctl(o.Name)
	if errors.Is(err, fs.ErrNotExist) && strings.Contains(o.Name, "/") {
		return nil // the interface is gone, and its setting with it
	}
	if err != nil || cur != set {
		return err
	}
	return d.sys().writeSysctl(o.Name, before)
}

func parseSysctl(detail string) (before, set int, err error) {
	b, s, _ := strings.Cut(detail, " ")
	if before, err = strconv.Atoi(b); err == nil {
		set, err = strconv.Atoi(s)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("journal: bad sysctl record %q", detail)
	}
	return before, set, nil
}

func readInt(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}
