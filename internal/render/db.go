package render

import "github.com/bulkhead/bulkhead/internal/plan"

func dbMariaDB(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
func dbPostgres(p *plan.Plan, n *plan.Node, in Input) ([]File, []Service, error) {
	return nil, nil, errNotYet
}
