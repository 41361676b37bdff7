package local

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/bulkhead/bulkhead/internal/durable"
)

// Kinds of host objects the driver creates and records.
const (
	KindNftTable  = "nft-table" // host nftables table; Name is "family name"
	KindBridge    = "bridge"
	KindNetns     = "netns"
	KindVeth      = "veth" // host end
	KindMount     = "mount"
	KindContainer = "container"
	KindProcess   = "process" // the supervisor; Name is the pid, Detail its /proc start time
	KindKeeper    = "keeper"  // the supervisor's keeper (see pair.go), as KindProcess
	KindSysctl    = "sysctl"  // Name is a neighbour-table key, Detail "BEFORE SET"
	KindVolume    = "volume"  // a node's disk image mounted on the host; Name is the mount point, Detail the image
)

// Object is one recorded host object.
type Object struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Detail string `json:"detail,omitempty"`
}

// journal records every object before the driver creates it, so that an
// interrupted up leaves a record down can finish from. It is written
// atomically (temp file and rename) at every change.
type journal struct {
	mu      sync.Mutex
	path    string
	Stack   string   `json:"stack"`
	Objects []Object `json:"objects"`
	// IDs holds each node's block of host ids (see allocateIDs). It
	// outlives the objects: the node's files stay owned by those ids
	// until down --purge.
	IDs map[string]uint32 `json:"ids,omitempty"`
	// Unsandboxed records a stack brought up with NoSandbox, until down
	// --purge: its files belong to the host's ids, not to id blocks.
	Unsandboxed bool `json:"unsandboxed,omitempty"`

	// changes counts the changes made, written those on disk; writing
	// says a write is under way, which written waits on (see flush).
	changes, written uint64
	writing          bool
	wrote            *sync.Cond
}

func loadJournal(path, stack string) (*journal, error) {
	j := &journal{path: path, Stack: stack}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, j); err != nil {
		return nil, &damagedJournal{path: path, stack: stack, err: err}
	}
	j.path = path
	return j, nil
}

// record notes each of objs unless it is noted already, in one write.
func (j *journal) record(objs ...Object) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	changed := false
	for _, o := range objs {
		if !slices.Contains(j.Objects, o) {
			j.Objects = append(j.Objects, o)
			changed = true
		}
	}
	if !changed {
		// Perhaps noted by another node's worker, whose write is
		// under way.
		return j.flush()
	}
	return j.save()
}

// forget drops o once it is gone from the host.
func (j *journal) forget(o Object) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	i := slices.Index(j.Objects, o)
	if i < 0 {
		return nil
	}
	j.Objects = slices.Delete(j.Objects, i, i+1)
	return j.save()
}

// replace forgets each of gone and notes each of objs not noted yet, in
// one write: a reader never sees the one without the other.
func (j *journal) replace(gone []Object, objs ...Object) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	kept := slices.DeleteFunc(slices.Clone(j.Objects), func(o Object) bool { return slices.Contains(gone, o) })
	for _, o := range objs {
		if !slices.Contains(kept, o) {
			kept = append(kept, o)
		}
	}
	if slices.Equal(kept, j.Objects) {
		return j.flush()
	}
	j.Objects = kept
	return j.save()
}

func (j *journal) has(o Object) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Contains(j.Objects, o)
}

func (j *journal) list(kind string) []Object {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []Object
	for _, o := range j.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// save writes the journal with its latest change, with j.mu held, and
// returns once that is on disk.
func (j *journal) save() error {
	j.changes++
	return j.flush()
}

// flush returns, with j.mu held, once every change made so far is on
// disk. Writers take turns, and j.mu is free while one writes: up makes
// several nodes at once, each recording its objects, and the changes that
// come in during one write all go in the next, not a write (two fsyncs)
// each, one after another.
func (j *journal) flush() error {
	if j.wrote == nil {
		j.wrote = sync.NewCond(&j.mu)
	}
	want := j.changes
	for j.written < want {
		if j.writing {
			j.wrote.Wait()
			continue
		}
		j.writing = true
		have := j.changes
		data, err := json.MarshalIndent(j, "", "  ")
		j.mu.Unlock()
		if err == nil {
			err = j.write(data)
		}
		j.mu.Lock()
		j.writing = false
		if err == nil {
			j.written = have
		}
		j.wrote.Broadcast()
		if err != nil {
			return err
		}
	}
	return nil
}

func (j *journal) write(data []byte) error {
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return err
	}
	return durable.Write(j.path, data, 0o600)
}
