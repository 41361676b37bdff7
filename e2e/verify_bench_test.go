package e2e

import (
	"encoding/json"
	"fmt"
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
		extra := ""
		if apps != 2 {
			extra = fmt.Sprintf("tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: %d\n", apps)
		}
		s := newStack(b, fmt.Sprintf("e2evb%d", nodes), 239, 18880+2*i, extra)
		s.run("up")
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			var v verifyJSON
			for b.Loop() {
				out, errOut, err := s.stdout("verify", "--output", "json")
				if err != nil {
					b.Fatalf("verify: %v\n%s", err, errOut)
				}
				if err := json.Unmarshal([]byte(out), &v); err != nil || !v.Pass {
					b.Fatalf("verify did not pass (%v):\n%s", err, out)
				}
			}
			b.ReportMetric(float64(v.Counts.Cells), "cells")
			b.ReportMetric(float64(v.Probes), "probes")
		})
		s.run("down", "--purge")
	}
}
