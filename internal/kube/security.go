package kube

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
	"github.com/bulkhead/bulkhead/internal/plan"
)

// Pod Security Standards levels, from the strictest.
const (
	LevelRestricted = "restricted"
	LevelBaseline   = "baseline"
	LevelPrivileged = "privileged"
)

var levelRank = map[string]int{LevelRestricted: 0, LevelBaseline: 1, LevelPrivileged: 2}

// Capabilities each level admits beyond drop ALL, as of Kubernetes 1.34's
// Pod Security Standards.
var (
	restrictedCaps = []string{"NET_BIND_SERVICE"}
	baselineCaps   = []string{"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
		"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)

// Restriction is one way a tier's pods fall short of the restricted Pod
// Security Standard, and the level they need instead.
type Restriction struct {
	Tier   string `json:"tier"`
	Level  string `json:"level"`
	Reason string `json:"reason"`
}

func (r Restriction) String() string {
	return fmt.Sprintf("%s needs %s: %s", r.Tier, r.Level, r.Reason)
}

// restrict lists why a tier's pods cannot meet restricted. Every pod runs
// the node agent as root, as the local driver does in a user namespace,
// and its daemons start as root and drop to their accounts; a capability
// beyond a level's list needs the next level.
func restrict(n *plan.Node, d *catalog.Descriptor) []Restriction {
	out := []Restriction{{Tier: n.Tier, Level: LevelBaseline,
		Reason: "runs as root (runAsNonRoot is not set): the node agent supervises daemons that start as root and drop to " + accounts(d)}}
	var overRestricted, overBaseline []string
	for _, c := range d.AllCapabilities() {
		c = strings.TrimPrefix(c, "CAP_")
		if !slices.Contains(restrictedCaps, c) {
			overRestricted = append(overRestricted, c)
		}
		if !slices.Contains(baselineCaps, c) {
			overBaseline = append(overBaseline, c)
		}
	}
	if len(overRestricted) > 0 {
		out = append(out, Restriction{Tier: n.Tier, Level: LevelBaseline,
			Reason: "adds capabilities restricted does not admit: " + strings.Join(overRestricted, ", ")})
	}
	if len(overBaseline) > 0 {
		out = append(out, Restriction{Tier: n.Tier, Level: LevelPrivileged,
			Reason: fmt.Sprintf("%s %s needs %s, which baseline does not admit", d.Role, d.Software, strings.Join(overBaseline, ", "))})
	}
	return out
}

func accounts(d *catalog.Descriptor) string {
	if len(d.Accounts) == 0 {
		return "no other account (it stays root)"
	}
	return strings.Join(d.Accounts, ", ")
}
