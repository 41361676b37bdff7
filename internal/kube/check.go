package kube

import (
	"github.com/bulkhead/bulkhead/internal/spec"
)

// Check refuses a stack file that says something a cluster cannot do, so
// that an export never drops a setting silently. It reports every such
// field at once, where the file wrote it. Values the file leaves to their
// defaults are not its words, and pass.
func Check(st *spec.Stack) error {
	var errs spec.Errors
	for _, t := range st.Ordered() {
		f := "tiers." + t.Name + ".pids"
		if st.Written(f) {
			errs = append(errs, st.ErrorAt(f, "Kubernetes has no pids limit per pod (the kubelet's podPidsLimit is one value for every pod of a node)",
				"remove it for the export, or set podPidsLimit on the cluster's nodes"))
		}
	}
	for _, f := range []string{"publish.http", "publish.https"} {
		if st.Written(f) {
			errs = append(errs, st.ErrorAt(f, "a host address has no place on a cluster: the edge's LoadBalancer Service gets its address from the cluster and serves 80 and 443",
				"remove it for the export; up still publishes on the defaults"))
		}
	}
	// The relay's one way out of the stack is the host's NAT to one
	// address, proved by verify from every node; a cluster's egress is
	// its CNI's and its nodes' NAT, which neither a NetworkPolicy nor
	// this export can pin to one source. Until it can, the export says so.
	if t := st.ByRole(spec.RoleMail); t != nil {
		f := "tiers." + t.Name
		if st.Written(f + "#key") {
			f += "#key"
		}
		e := st.ErrorAt(f, "the mail tier has no Kubernetes equivalent yet: its smarthost egress relies on the host's NAT to one address, which a cluster's network does not give one pod",
			"remove the mail tier (and mail:) for the export, and relay the app pods' mail through the cluster's own mail service")
		e.Field = "tiers." + t.Name
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
