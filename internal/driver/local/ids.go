package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/runc"
)

// Every node runs in a user namespace of its own: its ids 0..idRange-1 are
// the host's ids base..base+idRange-1, in a block no other node, stack or
// host account uses. Root in a node is then an unprivileged stranger on the
// host: it owns nothing but its node's writable files, and a capability it
// holds counts only for what its own user namespace owns.
const (
	idRange = 1 << 16
	// idFirst is above the ranges Debian hands out (system and login
	// accounts below 65536, /etc/subuid blocks from 100000 for a few
	// thousand users) and far below the 32-bit limit.
	idFirst = 1 << 28
	// idBlocks caps how many nodes a host can run: 4096 blocks of 65536
	// ids end at 2^28 + 2^28 = 2^29.
	idBlocks = 4096
)

// nodeIDs returns the host id block of a node, as runc maps it.
func (j *journal) nodeIDs(node string) runc.IDMap {
	j.mu.Lock()
	defer j.mu.Unlock()
	base, ok := j.IDs[node]
	if !ok {
		return runc.IDMap{}
	}
	return runc.IDMap{Host: base, Size: idRange}
}

// hostID maps an id inside a node to the host's.
func hostID(m runc.IDMap, id int) int {
	if m.Size == 0 {
		return id
	}
	return int(m.Host) + id
}

// sandbox records whether the stack's nodes run sandboxed (the default)
// and gives sandboxed nodes their id blocks. A stack's files are owned by
// the ids of the mode it was made in, so the mode cannot change under it.
func (d *Driver) sandbox(p *plan.Plan, j *journal, off bool) error {
	j.mu.Lock()
	made := len(j.IDs) > 0 || j.Unsandboxed
	was := j.Unsandboxed
	j.mu.Unlock()
	if made && was != off {
		want, have := "with", "without"
		if off {
			want, have = "without", "with"
		}
		return fmt.Errorf("stack %s was brought up %s its sandbox (user namespaces and seccomp); to run it %s, remove it with 'bulkhead down --purge' first", p.Stack, have, want)
	}
	if off {
		j.mu.Lock()
		j.Unsandboxed = true
		err := j.save()
		j.mu.Unlock()
		return err
	}
	return d.allocateIDs(p, j)
}

// sandboxed reports whether the stack's nodes run in user namespaces
// under seccomp.
func (j *journal) sandboxed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return !j.Unsandboxed
}

// allocateIDs gives every node of p that has none a block of host ids
// that no node of any stack on this host holds, and records it in the
// journal. A node keeps its block for as long as its data lives (until
// down --purge), because its files are owned by those ids.
func (d *Driver) allocateIDs(p *plan.Plan, j *journal) error {
	var missing []string
	for _, n := range p.Nodes {
		if j.nodeIDs(n.Name).Size == 0 {
			missing = append(missing, n.Name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// Two stacks' ups must not hand out the same block.
	lock, err := os.OpenFile(d.paths(p.Stack).idsLock(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	used, err := d.usedIDs(p.Stack)
	if err != nil {
		return err
	}
	for _, id := range j.IDs {
		used[id] = true
	}
	next := uint32(idFirst)
	j.mu.Lock()
	if j.IDs == nil {
		j.IDs = map[string]uint32{}
	}
	for _, name := range missing {
		for used[next] {
			next += idRange
		}
		if next >= idFirst+idBlocks*idRange {
			j.mu.Unlock()
			return fmt.Errorf("no free block of host ids for node %s: %d nodes already hold one on this host; remove stacks with 'bulkhead down --purge'", name, idBlocks)
		}
		j.IDs[name] = next
		used[next] = true
	}
	err = j.save()
	j.mu.Unlock()
	return err
}

// usedIDs reads the id blocks that other stacks on this host hold.
func (d *Driver) usedIDs(self string) (map[uint32]bool, error) {
	used := map[uint32]bool{}
	entries, err := os.ReadDir(d.root())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == self {
			continue
		}
		data, err := os.ReadFile(filepath.Join(d.root(), e.Name(), "state.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var other struct {
			IDs map[string]uint32 `json:"ids"`
		}
		if err := json.Unmarshal(data, &other); err != nil {
			return nil, fmt.Errorf("read stack %s's journal: %w", e.Name(), err)
		}
		for _, id := range other.IDs {
			used[id] = true
		}
	}
	return used, nil
}
