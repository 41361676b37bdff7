package spec

import (
	"fmt"
	"sort"
)

// DiskNeeds returns the disk the stack's nodes need in all: each tier's
// disk times its replicas.
func (s *Stack) DiskNeeds() int64 {
	var total int64
	for _, t := range s.Tiers {
		total += int64(t.Disk) * int64(max(t.Replicas, 1))
	}
	return total
}

// CheckDisk reports, as Errors placed at the tiers' disk fields, a stack
// whose nodes need more disk than free, the bytes free in where (the
// directory a driver keeps node images in; it only names it in messages).
// It names the tiers with the most disk, as many as it takes to cover the
// shortfall by lowering them to their role's least; if even that would not
// do, only the largest, with a hint to free space instead. Like the rest
// of this package it does no I/O: the caller measures free.
func (s *Stack) CheckDisk(free int64, where string) error {
	total := s.DiskNeeds()
	if total <= free {
		return nil
	}
	short := total - free
	tiers := s.Ordered()
	need := func(t *Tier) int64 { return int64(t.Disk) * int64(max(t.Replicas, 1)) }
	least := func(t *Tier) int64 { return int64(MinDisk[t.Role]) * int64(max(t.Replicas, 1)) }
	sort.SliceStable(tiers, func(i, j int) bool { return need(tiers[i]) > need(tiers[j]) })
	var named []*Tier
	var spare, leastAll int64
	for _, t := range tiers {
		leastAll += least(t)
	}
	for _, t := range tiers {
		if spare >= short {
			break
		}
		if need(t) <= least(t) {
			continue // nothing to give
		}
		named = append(named, t)
		spare += need(t) - least(t)
	}
	if spare < short {
		named = tiers[:1]
	}
	var errs Errors
	for _, t := range named {
		f := "tiers." + t.Name + ".disk"
		of := fmt.Sprintf("%s of it for %s", sizeUp(need(t)), t.Name)
		if t.Replicas > 1 {
			of = fmt.Sprintf("%s of it for %d %s nodes of %s", sizeUp(need(t)), t.Replicas, t.Name, t.Disk)
		}
		msg := fmt.Sprintf("the stack needs %s of disk, %s, but %s has %s free", sizeUp(total), of, where, sizeDown(free))
		hint := fmt.Sprintf("lower disk here (the least for %s is %s), or free %s there", t.Role, MinDisk[t.Role], sizeUp(short))
		if spare < short {
			hint = fmt.Sprintf("even with every tier at its least the stack needs %s; free %s there", sizeUp(leastAll), sizeUp(leastAll-free))
		}
		errs = append(errs, &Error{File: s.File, Pos: s.Pos(f), Field: f, Msg: msg, Hint: hint})
	}
	return errs
}

// sizeUp and sizeDown round a byte count to whole mebibytes for messages,
// up for what is needed and down for what is free, so that a message never
// promises more room than there is.
func sizeUp(b int64) ByteSize   { return ByteSize((b + 1<<20 - 1) &^ (1<<20 - 1)) }
func sizeDown(b int64) ByteSize { return ByteSize(max(b, 0) &^ (1<<20 - 1)) }
