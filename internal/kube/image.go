package kube

import (
	"fmt"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// baseImage is the Debian release the local driver's hosts run, so that
// the images hold the same daemon versions the renderers were tested with.
const baseImage = "debian:12-slim"

// dockerfile builds the image a node runs: the plan's Debian packages for
// it, installed without starting a service (policy-rc.d exits 101), and
// bulkhead itself, whose agent is the first process. The build context
// must hold a bulkhead binary for the cluster's architecture.
func dockerfile(p *plan.Plan, n *plan.Node) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Image of bulkhead's %s node running %s. Build it from a directory that\n", n.Role, n.Software)
	b.WriteString("# holds a bulkhead binary built for the cluster's architecture:\n")
	fmt.Fprintf(&b, "#   docker build -t REGISTRY/%s:TAG -f Dockerfile DIR\n", imageName(p, n))
	fmt.Fprintf(&b, "FROM %s\n", baseImage)
	b.WriteString("RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \\\n")
	b.WriteString(" && apt-get update \\\n")
	fmt.Fprintf(&b, " && apt-get install -y --no-install-recommends %s \\\n", strings.Join(p.Packages(n), " "))
	b.WriteString(" && rm -rf /var/lib/apt/lists/*\n")
	b.WriteString("COPY bulkhead " + agentPath + "\n")
	b.WriteString("ENTRYPOINT [\"" + agentPath + "\"]\n")
	return []byte(b.String())
}
