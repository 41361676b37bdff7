package render

import "github.com/bulkhead/bulkhead/internal/plan"

func edgeNginx(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
func edgeHAProxy(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
