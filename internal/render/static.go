package render

import "github.com/bulkhead/bulkhead/internal/plan"

func staticLighttpd(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
func staticNginx(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
