package kube

import (
	"fmt"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
)

// baseImage is the Debian release the local driver's hosts run, so that
// the images hold the same daemon versions the renderers were tested with.
const baseImage = "debian:12-slim"

// account is an account the images create with fixed ids, before the
// packages that would create it with whatever ids are free.
type account struct {
	ID          int64
	Home, Shell string
}

// accountIDs are the accounts whose group reads a node's secrets (the
// catalog's SecretGroup), with the ids the images give them, so that a
// pod's fsGroup names the image's group. Debian fixes www-data's
// (base-passwd); mysql's and postgres's the Dockerfile creates, with the
// ids and homes the packages would choose.
var accountIDs = map[string]account{
	"www-data": {ID: 33},
	"mysql":    {ID: 999, Home: "/nonexistent", Shell: "/bin/false"},
	"postgres": {ID: 999, Home: "/var/lib/postgresql", Shell: "/bin/bash"},
}

// dockerfile builds the image a node runs: the plan's Debian packages for
// it, installed without starting a service (policy-rc.d exits 101), and
// bulkhead itself, whose agent is the first process. The build context
// must hold a bulkhead binary for the cluster's architecture.
func dockerfile(p *plan.Plan, n *plan.Node, secretGroup string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Image of bulkhead's %s node running %s. Build it from a directory that\n", n.Role, n.Software)
	b.WriteString("# holds a bulkhead binary built for the cluster's architecture:\n")
	fmt.Fprintf(&b, "#   docker build -t REGISTRY/%s:TAG -f Dockerfile DIR\n", imageName(p, n))
	fmt.Fprintf(&b, "FROM %s\n", baseImage)
	if a, ok := accountIDs[secretGroup]; ok && a.Home != "" {
		fmt.Fprintf(&b, "RUN groupadd --system --gid %d %s \\\n", a.ID, secretGroup)
		fmt.Fprintf(&b, " && useradd --system --uid %d --gid %d --no-create-home --home-dir %s --shell %s %s\n", a.ID, a.ID, a.Home, a.Shell, secretGroup)
	}
	b.WriteString("RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \\\n")
	b.WriteString(" && apt-get update \\\n")
	fmt.Fprintf(&b, " && apt-get install -y --no-install-recommends %s \\\n", strings.Join(p.Packages(n), " "))
	b.WriteString(" && rm -rf /var/lib/apt/lists/*\n")
	b.WriteString("COPY bulkhead " + agentPath + "\n")
	b.WriteString("ENTRYPOINT [\"" + agentPath + "\"]\n")
	return []byte(b.String())
}
