package e2e

import (
	"fmt"
	"testing"
)

// BenchmarkUpDown times the local driver's verbs on the default stack and on
// one with 20 app nodes, once packages are installed:
//   - up/cold: the first up, with database initialisation;
//   - up/warm: up after a down that kept the data;
//   - up/again: up with nothing to do;
//   - down: down that keeps data.
//
// Run with: go test ./e2e -run XXX -bench UpDown -benchtime 3x
func BenchmarkUpDown(b *testing.B) {
	for i, apps := range []int{2, 20} {
		extra := unwatched
		if apps != 2 {
			extra = fmt.Sprintf("tiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: %d\n", apps)
		}
		s := newStack(b, fmt.Sprintf("e2eb%d", apps), 235, 18480-2*i, extra)
		s.run("up") // first run warms the page cache and the package check
		b.Run(fmt.Sprintf("apps=%d/up-cold", apps), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s.run("down", "--purge")
				b.StartTimer()
				s.run("up")
			}
		})
		b.Run(fmt.Sprintf("apps=%d/down", apps), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s.run("up")
				b.StartTimer()
				s.run("down")
			}
		})
		b.Run(fmt.Sprintf("apps=%d/up-warm", apps), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s.run("down")
				b.StartTimer()
				s.run("up")
			}
		})
		b.Run(fmt.Sprintf("apps=%d/up-again", apps), func(b *testing.B) {
			for b.Loop() {
				s.run("up")
			}
		})
		s.run("down", "--purge")
	}
}
