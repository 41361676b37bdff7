package render_test

import (
	"fmt"
	"testing"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/render"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// BenchmarkRender renders every node of a stack with 1, 10 and 100 app
// nodes. The per-node work is constant but the edge's upstream and the
// firewall sets of db, cache and storage grow with the pool, so the total
// should grow about linearly.
func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		src := fmt.Sprintf("networks:\n  private: 10.80.0.0/23\ntiers:\n  edge: {}\n  static: {}\n  cache: {}\n  db: {}\n  storage: {}\n  app:\n    replicas: %d\n", n)
		st, err := spec.Load("bulkhead.yaml", []byte(src), spec.Env{})
		if err != nil {
			b.Fatal(err)
		}
		st.ByRole(spec.RoleStorage).Protocol = spec.ProtocolSFTP
		p, err := plan.Build(st)
		if err != nil {
			b.Fatal(err)
		}
		in := render.Input{Layout: render.DefaultLayout(), Secrets: testSecrets(p)}
		b.Run(fmt.Sprintf("apps=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := render.Render(p, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
