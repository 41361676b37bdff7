package render

import "github.com/bulkhead/bulkhead/internal/plan"

func cacheMemcached(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
func cacheRedis(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
