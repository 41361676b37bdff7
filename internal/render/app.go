package render

import "github.com/bulkhead/bulkhead/internal/plan"

func appApache(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
func appNginx(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
