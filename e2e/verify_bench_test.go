package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkVerify times a full `bulkhead verify` (the binary, as a user
// runs it) on stacks of 7, 27 and 106 nodes: the default stack, then 22 and
// 101 app nodes. It reports the cells and probes of each run besides the
// time.
//
// Run with: go test ./e2e -run XXX -bench Verify -benchtime 5x
func BenchmarkVerify(b *testing.B) {
	for i, apps := range []int{2, 22, 101} {
		nodes := apps + 5
		extra := unwatched
		if apps != 2 {
			extra = fmt.Sprintf("tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: %d\n", apps)
		}
		s := newStack(b, fmt.Sprintf("e2evb%d", nodes), 239, 18880+2*i, extra)
		s.run("up")
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			// The text report, as a user runs it; its first line and its
			// counts give the figures.
			var out string
			for b.Loop() {
				o, errOut, err := s.stdout("verify")
				if err != nil || !strings.Contains(o, "PASS: stack ") {
					b.Fatalf("verify did not pass (%v):\n%s\n%s", err, o, errOut)
				}
				out = o
			}
			var cells, probes int
			fmt.Sscanf(out[strings.Index(out, "cells probed: "):], "cells probed: %d", &cells)
			fmt.Sscanf(out[strings.Index(out, "ports (")+len("ports ("):], "%d probes", &probes)
			b.ReportMetric(float64(cells), "cells")
			b.ReportMetric(float64(probes), "probes")
		})
		s.run("down", "--purge")
	}
}
