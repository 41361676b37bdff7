// Package spec defines bulkhead.yaml, the file an operator writes to describe a
// split stack, and turns its bytes into a validated Stack. It does no I/O of
// its own except the one check that the site directory exists, which Validate
// does through an injected function.
package spec

import (
	"net/netip"
	"path"

	"github.com/bulkhead/bulkhead/internal/catalog"
)

// Roles in the order the plan lays nodes out. The order is part of the
// contract: addresses are handed out in it, so adding app replicas never
// renumbers the other tiers.
const (
	RoleEdge    = catalog.RoleEdge
	RoleStatic  = catalog.RoleStatic
	RoleCache   = catalog.RoleCache
	RoleDB      = catalog.RoleDB
	RoleStorage = catalog.RoleStorage
	RoleApp     = catalog.RoleApp
	RoleMonitor = catalog.RoleMonitor
	RoleMail    = catalog.RoleMail
)

// Roles lists every role, in plan order.
var Roles = []string{RoleEdge, RoleStatic, RoleCache, RoleDB, RoleStorage, RoleApp, RoleMonitor, RoleMail}

// Protocols lists how the storage tier can serve files; the first is the
// default. The catalog lists the rest, as storage's choices; every other
// role's choices and default are the catalog's too.
var Protocols = append([]string{ProtocolAuto}, catalog.Softwares(RoleStorage)...)

// Storage protocols. Auto is resolved by whoever knows the kernel (the
// driver) before a plan is built.
const (
	ProtocolAuto = "auto"
	ProtocolNFS  = catalog.ProtocolNFS
	ProtocolSFTP = catalog.ProtocolSFTP
)

// Stack is a parsed bulkhead.yaml.
type Stack struct {
	// Name names the stack; it prefixes every kernel object bulkhead creates.
	Name string `yaml:"name"`
	// Domain is the site's host name, used as the edge's server_name.
	Domain string `yaml:"domain"`
	// Networks are the stack's subnets.
	Networks Networks `yaml:"networks"`
	// Publish says where on the host the edge's ports appear.
	Publish Publish `yaml:"publish"`
	// Tiers maps a tier name to its settings, or to off. Empty, or only
	// tiers turned off, means the default stack (without those).
	Tiers map[string]*Tier `yaml:"tiers"`
	// Site is the application bulkhead serves.
	Site Site `yaml:"site"`
	// Flows are extra allowed connections beyond what the roles imply.
	Flows []Flow `yaml:"flows"`
	// Mail says where the mail tier's relay sends the app nodes' mail.
	// Without it (or without a smarthost in it) the relay holds every
	// message in its queue, for "bulkhead mail" to show.
	Mail *Mail `yaml:"mail"`

	// File is the path the stack was read from, for messages.
	File string `yaml:"-"`
	// Dir is the directory relative paths in the file are resolved against.
	Dir string `yaml:"-"`

	pos map[string]Pos
	bad map[string]bool // fields whose values did not decode
	// off holds the tiers the file turned off ("monitor: off"); they are
	// not in Tiers.
	off map[string]bool
	// defaultTiers is set when Tiers is the default stack's, because the
	// file listed no tier it keeps.
	defaultTiers bool
}

// Off reports whether the stack file turned the tier called name off.
func (s *Stack) Off(name string) bool { return s.off[name] }

// Networks holds the stack's subnets.
type Networks struct {
	// Private is the subnet every node sits on.
	Private netip.Prefix `yaml:"private"`
	// Public is the visitors' side of the edge.
	Public netip.Prefix `yaml:"public"`
	// DMZ, when set, separates edge, static and app from the data tiers.
	DMZ netip.Prefix `yaml:"dmz"`
}

// Publish holds host addresses the edge's ports are published on.
type Publish struct {
	HTTP  netip.AddrPort `yaml:"http"`
	HTTPS netip.AddrPort `yaml:"https"`
	// Redirect sends plain-HTTP visitors to HTTPS.
	Redirect bool `yaml:"redirect"`
	// Certificate and Key are the edge's TLS certificate chain and private
	// key (PEM files, relative to the stack file). Empty: bulkhead makes a
	// certificate from a CA of the stack's own.
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// Tier is one role's node group.
type Tier struct {
	// Name is the tier's key in the tiers mapping.
	Name string `yaml:"-"`
	// Role is what the tier does; it defaults to the tier's name.
	Role string `yaml:"role"`
	// Software is the daemon that plays the role.
	Software string `yaml:"software"`
	// Replicas is how many identical nodes the tier has.
	Replicas int `yaml:"replicas"`
	// Memory is the cgroup memory limit of each node.
	Memory ByteSize `yaml:"memory"`
	// Pids is the cgroup pids limit of each node.
	Pids int `yaml:"pids"`
	// Disk is the size of each node's filesystem image, which holds
	// everything the node may write: its data and its logs.
	Disk ByteSize `yaml:"disk"`
	// CPU is each node's share of CPU time relative to the other nodes,
	// 1 to 10000, as cgroup v2's cpu.weight (100 is an even share). It
	// matters only when the host's CPUs are busy; it is not a cap.
	CPU int `yaml:"cpu"`
	// Protocol is how storage serves files: auto, nfs or sftp.
	Protocol string `yaml:"protocol"`
}

// Site describes the application.
type Site struct {
	// Dir holds the site's files; relative to the stack file.
	Dir string `yaml:"dir"`
	// Static lists the request paths the static tier serves: prefixes
	// ending in "/" or globs like "*.css".
	Static []string `yaml:"static"`
	// Database names the app's database and its user.
	Database Database `yaml:"database"`
	// Writable lists site paths app nodes may write (uploads). They are
	// shared by every release of the site.
	Writable []string `yaml:"writable"`
	// Check is the path a deploy requests from each app node, besides /,
	// before the node gets visitors' requests; both must answer 2xx.
	// Default /healthz.
	Check string `yaml:"check"`
}

// Database names the app's database.
type Database struct {
	Name string `yaml:"name"`
	User string `yaml:"user"`
}

// TLS levels of the relay's connection to the smarthost, as Postfix's
// smtp_tls_security_level names them.
const (
	// TLSNone never starts TLS.
	TLSNone = "none"
	// TLSMay uses TLS when the smarthost offers it, unverified.
	TLSMay = "may"
	// TLSEncrypt requires TLS, without checking the certificate.
	TLSEncrypt = "encrypt"
	// TLSVerify requires TLS and a certificate for TLSName that CAFile's
	// authorities signed.
	TLSVerify = "verify"
)

// TLSLevels lists the mail.tls values, the default first.
var TLSLevels = []string{TLSMay, TLSNone, TLSEncrypt, TLSVerify}

// Mail is how the mail tier delivers.
type Mail struct {
	// Smarthost is the one server the relay hands all mail to, as
	// IPV4:PORT (587 for submission, 25 for a plain relay). It is the
	// only address any node of the stack reaches beyond the host: the
	// host forwards and masquerades that flow alone. The relay resolves
	// no names (no node has DNS), so it is an address. Empty: mail is
	// held in the relay's queue.
	Smarthost string `yaml:"smarthost"`
	// TLS is none, may (the default: TLS when offered), encrypt (TLS
	// required) or verify (TLS required, and the certificate checked
	// against TLSName and CAFile).
	TLS string `yaml:"tls"`
	// TLSName is the name the smarthost's certificate must carry, for
	// tls: verify.
	TLSName string `yaml:"tls_name"`
	// CAFile is a PEM file (relative to the stack file) of the
	// authorities that sign the smarthost's certificate, for tls: verify.
	CAFile string `yaml:"ca_file"`
	// Username and PasswordFile log the relay in to the smarthost (SMTP
	// AUTH); the file holds the password on its first line and is read
	// by up, never copied anywhere but into the mail node's secrets.
	// AUTH needs tls: encrypt or verify.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// SmarthostAddr is the smarthost as an address and port, or the zero
// AddrPort when the stack has none (Validate has checked it parses).
func (s *Stack) SmarthostAddr() netip.AddrPort {
	if s.Mail == nil || s.Mail.Smarthost == "" {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(s.Mail.Smarthost)
	if err != nil {
		return netip.AddrPort{}
	}
	return ap
}

// Flow is an extra allowed connection.
type Flow struct {
	From  string `yaml:"from"`
	To    string `yaml:"to"`
	Port  int    `yaml:"port"`
	Proto string `yaml:"proto"`
}

// Pos is a place in the stack file.
type Pos struct {
	Line, Col int
}

// Pos returns where field (a dotted path such as "tiers.app.replicas") was
// written, or the closest enclosing field that was.
func (s *Stack) Pos(field string) Pos {
	for f := field; f != ""; {
		if p, ok := s.pos[f]; ok {
			return p
		}
		i := lastDot(f)
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return s.pos[""]
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' || s[i] == '[' {
			return i
		}
	}
	return -1
}

// Path resolves a path written in the stack file against its directory.
func (s *Stack) Path(p string) string {
	if p == "" || path.IsAbs(p) {
		return p
	}
	return path.Join(s.Dir, p)
}

// Ordered returns the stack's tiers in plan order: by role, then name.
func (s *Stack) Ordered() []*Tier {
	var out []*Tier
	for _, r := range Roles {
		var names []string
		for n, t := range s.Tiers {
			if t.Role == r {
				names = append(names, n)
			}
		}
		sortStrings(names)
		for _, n := range names {
			out = append(out, s.Tiers[n])
		}
	}
	return out
}

// ByRole returns the first tier that plays role, or nil.
func (s *Stack) ByRole(role string) *Tier {
	for _, t := range s.Ordered() {
		if t.Role == role {
			return t
		}
	}
	return nil
}
