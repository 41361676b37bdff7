package local

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// defaultWorkers bounds how many nodes up works on at once. Much of a
// node's making is waiting on the kernel and on the processes it runs (ip,
// nft, mkfs, runc): as of 2026-11, a serial up at 25 app nodes kept a
// 2-core host only 30% busy. More workers than cores pay for that; many
// more would only pile runc processes onto the same cores. 8 is a guess
// within that range, not a measured optimum.
const defaultWorkers = 8

func (d *Driver) workerCount() int {
	if d.workers > 0 {
		return d.workers
	}
	return defaultWorkers
}

// eachNode calls fn for every node, up to workerCount at once, and returns
// the first error. After an error, or when ctx ends, nodes not yet begun
// are not begun; those under way finish the step they are in.
//
// fn must be safe to run for several nodes at once: the journal is, and so
// are the kernel's objects of different nodes.
func (d *Driver) eachNode(ctx context.Context, nodes []*plan.Node, fn func(ctx context.Context, i int, n *plan.Node) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(d.workerCount())
	for i, n := range nodes {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			return fn(gctx, i, n)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// pointers returns a pointer to each of nodes, in order.
func pointers(nodes []plan.Node) []*plan.Node {
	out := make([]*plan.Node, len(nodes))
	for i := range nodes {
		out[i] = &nodes[i]
	}
	return out
}
