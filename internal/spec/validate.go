package spec

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/internal/catalog"
)

// Limits that names and counts must respect.
const (
	// MaxReplicas bounds one tier's node count.
	MaxReplicas = 250
	// MaxNameLen bounds the stack name. Host-side interface names are
	// "<stack>-<ordinal><network>" (see plan.Names), and Linux caps
	// interface names at 15 bytes: 10 + "-" + up to 3 digits + 1 letter.
	MaxNameLen = 10
)

// Vantage names that tiers may not take: verify uses them for the probes
// from outside the stack and from the host itself.
const (
	Outside = "outside"
	Host    = "host"
)

var (
	nameRE   = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)
	domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// A segment may not start with a dot: no "..", no "/.git/".
	prefixRE   = regexp.MustCompile(`^/([A-Za-z0-9_~-][A-Za-z0-9._~-]*/)*$`)
	globRE     = regexp.MustCompile(`^\*\.[A-Za-z0-9]{1,16}$`)
	sqlNameRE  = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,31}$`)
	sitePathRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$`)
)

// Env is what Validate needs to know about the host. It is injected so that
// this package stays free of I/O.
type Env struct {
	// DirExists reports whether dir is an existing directory.
	DirExists func(dir string) bool
	// FileExists reports whether file is an existing regular file.
	FileExists func(file string) bool
}

type validator struct {
	s    *Stack
	errs Errors
}

func (v *validator) fail(field, hint, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.s.File, Pos: v.s.Pos(field), Field: field, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// Validate checks a parsed stack and returns every problem as Errors, or nil.
func Validate(s *Stack, env Env) error {
	v := &validator{s: s}
	v.name()
	v.networks()
	v.publish(env)
	v.tiers()
	v.site(env)
	v.flows()
	v.mail(env)
	if len(v.errs) > 0 {
		return v.errs
	}
	return nil
}

// NameChars reports whether name is made of the characters a stack name may
// have: lowercase letters, digits and inner dashes, starting with a letter.
// A name taken from elsewhere than a stack file (--stack) is checked with it
// before it becomes part of a path.
func NameChars(name string) bool { return nameRE.MatchString(name) }

func (v *validator) name() {
	s := v.s
	switch {
	case !nameRE.MatchString(s.Name):
		v.fail("name", "use lowercase letters, digits and inner dashes, starting with a letter, like \"shop\"", "%q is not a valid stack name", s.Name)
	case len(s.Name) > MaxNameLen:
		v.fail("name", fmt.Sprintf("use at most %d characters", MaxNameLen),
			"%q is %d characters; it prefixes kernel interface names such as %q, which Linux limits to 15", s.Name, len(s.Name), s.Name+"-106p")
	}
	if !domainRE.MatchString(s.Domain) || len(s.Domain) > 253 {
		v.fail("domain", "write a host name such as www.example.com", "%q is not a valid domain name", s.Domain)
	}
}

// nodesOn counts the nodes that sit on each network, as the plan lays them.
func (v *validator) nodesOn() (private, dmz int) {
	for _, t := range v.s.Tiers {
		n := max(t.Replicas, 1)
		if v.s.Networks.DMZ.IsValid() {
			switch t.Role {
			case RoleEdge:
				dmz += n
				continue
			case RoleStatic, RoleApp, RoleMonitor:
				dmz += n
			}
		}
		private += n
	}
	return private, dmz
}

func (v *validator) networks() {
	nets := []struct {
		field string
		p     netip.Prefix
	}{{"networks.private", v.s.Networks.Private}, {"networks.public", v.s.Networks.Public}, {"networks.dmz", v.s.Networks.DMZ}}
	for _, n := range nets {
		if !n.p.IsValid() {
			continue
		}
		if !n.p.Addr().IsPrivate() {
			v.fail(n.field, "use a subnet inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
				"%s is not a private-use subnet; a stack subnet shadows those addresses on this host", n.p)
		}
	}
	priv, pub := v.s.Networks.Private, v.s.Networks.Public
	if priv == pub {
		v.fail("networks.public", "give the public side its own subnet, like 10.77.1.0/28", "the public subnet is the same as the private one (%s); visitors would share a network with the database", pub)
	} else {
		for i := range nets {
			for j := i + 1; j < len(nets); j++ {
				a, b := nets[i], nets[j]
				if a.p.IsValid() && b.p.IsValid() && a.p.Overlaps(b.p) {
					v.fail(b.field, "pick subnets that do not overlap", "%s overlaps %s (%s)", b.p, a.field, a.p)
				}
			}
		}
	}
	private, dmz := v.nodesOn()
	// Each subnet also holds the host's gateway address; the public one holds
	// the gateway, the edge and verify's outside vantage.
	v.fits("networks.private", priv, private+1)
	v.fits("networks.public", pub, 3)
	if v.s.Networks.DMZ.IsValid() {
		v.fits("networks.dmz", v.s.Networks.DMZ, dmz+1)
	}
}

func (v *validator) fits(field string, p netip.Prefix, need int) {
	if !p.IsValid() {
		return
	}
	usable := (1 << (32 - p.Bits())) - 2
	if p.Bits() > 30 {
		usable = 0
	}
	if usable < need {
		bits := 30
		for (1<<(32-bits))-2 < need {
			bits--
		}
		v.fail(field, fmt.Sprintf("use a /%d or larger", bits), "%s has room for %d addresses but the stack needs %d", p, usable, need)
	}
}

func (v *validator) publish(env Env) {
	p := v.s.Publish
	if p.HTTP == p.HTTPS {
		v.fail("publish.https", "publish https on its own port, like 127.0.0.1:8443", "https is published on the same address as http (%s)", p.HTTPS)
	}
	// The host publishes by DNAT to the edge's IPv4 address: one address
	// of its own, so that the rule says exactly which packets it takes.
	for _, f := range []struct {
		field string
		addr  netip.AddrPort
	}{{"publish.http", p.HTTP}, {"publish.https", p.HTTPS}} {
		switch a := f.addr.Addr(); {
		case !a.Is4():
			v.fail(f.field, "publish on 127.0.0.1 or on one of this host's IPv4 addresses", "%s is not an IPv4 address: the edge has only IPv4", a)
		case a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			v.fail(f.field, "publish on 127.0.0.1 or on one of this host's IPv4 addresses", "%s is not one address of this host", a)
		}
	}
	switch {
	case p.Certificate != "" && p.Key == "":
		v.fail("publish.certificate", "set publish.key to the certificate's private key too", "a certificate without its key")
	case p.Key != "" && p.Certificate == "":
		v.fail("publish.key", "set publish.certificate to the key's certificate too", "a key without its certificate")
	}
	for _, f := range []struct{ field, path string }{{"publish.certificate", p.Certificate}, {"publish.key", p.Key}} {
		if f.path != "" && env.FileExists != nil && !env.FileExists(v.s.Path(f.path)) {
			v.fail(f.field, "give the path of a PEM file, relative to the stack file", "file %s does not exist", v.s.Path(f.path))
		}
	}
}

func (v *validator) tiers() {
	s := v.s
	roles := map[string]string{}
	instances := map[string]string{}
	for _, name := range sortedKeys(s.Tiers) {
		t := s.Tiers[name]
		f := "tiers." + name
		keyField := f + "#key"
		if _, ok := s.pos[keyField]; !ok {
			keyField = f
		}
		switch {
		case !nameRE.MatchString(name) || len(name) > 63:
			v.failAt(keyField, f, "use lowercase letters, digits and inner dashes, starting with a letter", "%q is not a valid tier name", name)
		case name == Outside || name == Host:
			v.failAt(keyField, f, "pick another name", "%q is reserved for verify's vantage points", name)
		}
		if !slices.Contains(Roles, t.Role) {
			v.fail(f+".role", "roles are: "+strings.Join(Roles, ", "), "unknown role %q", t.Role)
			continue
		}
		if other, ok := roles[t.Role]; ok {
			v.failAt(keyField, f, "a stack has one tier per role; raise replicas instead", "a second %s tier (tier %q is one already)", t.Role, other)
		}
		roles[t.Role] = name
		if t.Role == RoleStorage {
			if t.Software != "" {
				v.fail(f+".software", "remove software and set protocol: auto, sftp or nfs", "the storage tier has no choice of software")
			}
			if !slices.Contains(Protocols, t.Protocol) {
				v.fail(f+".protocol", "use one of: "+strings.Join(Protocols, ", "), "unknown storage protocol %q", t.Protocol)
			}
		} else {
			if t.Protocol != "" {
				v.fail(f+".protocol", "remove it; only the storage tier has a protocol", "protocol is set on a %s tier", t.Role)
			}
			if names := catalog.Softwares(t.Role); !slices.Contains(names, t.Software) {
				v.fail(f+".software", fmt.Sprintf("for %s use one of: %s", t.Role, strings.Join(names, ", ")), "unknown software %q for role %s", t.Software, t.Role)
			}
		}
		switch {
		case t.Replicas < 1 || t.Replicas > MaxReplicas:
			v.fail(f+".replicas", fmt.Sprintf("use a number from 1 to %d", MaxReplicas), "replicas is %d", t.Replicas)
		case t.Replicas > 1 && t.Role != RoleApp && t.Role != RoleStatic:
			v.fail(f+".replicas", "only app and static tiers scale; set replicas: 1", "a %s tier cannot have %d replicas", t.Role, t.Replicas)
		}
		if t.Memory < 16<<20 {
			v.fail(f+".memory", "give each node at least 16M", "memory limit %s is too small to run a daemon", t.Memory)
		}
		if t.Pids < 16 || t.Pids > 1<<22 {
			v.fail(f+".pids", "use a number from 16 to 4194304", "pids limit %d is out of range", t.Pids)
		}
		if least := MinDisk[t.Role]; t.Disk < least {
			v.fail(f+".disk", fmt.Sprintf("give it at least %s, or remove the line for the default %s", least, DefaultDisk[t.Role]),
				"disk %s is too small: each %s node's filesystem needs room for ext4's metadata, its data and its logs", t.Disk, t.Role)
		}
		if t.CPU < 1 || t.CPU > MaxCPU {
			v.fail(f+".cpu", fmt.Sprintf("use a weight from 1 to %d; 100 is an even share, and the default for %s is %d", MaxCPU, t.Role, DefaultCPU[t.Role]),
				"cpu weight %d is out of range", t.CPU)
		}
		if t.Role == RoleStorage && t.Protocol != ProtocolNFS {
			clients := storageClients(v.s)
			mem, pids := StorageNeeds(clients)
			if t.Memory >= 16<<20 && t.Memory < mem {
				v.fail(f+".memory", fmt.Sprintf("give it at least %s (%s per client), or remove the line for that default", mem, StorageMemoryPerClient),
					"memory limit %s is too small for %d SFTP clients", t.Memory, clients)
			}
			if t.Pids >= 16 && t.Pids < pids {
				v.fail(f+".pids", fmt.Sprintf("give it at least %d (%d per client and 32), or remove the line for that default", pids, StoragePidsPerClient),
					"pids limit %d is too small for %d SFTP clients", t.Pids, clients)
			}
		}
		for _, inst := range InstanceNames(t) {
			if other, ok := instances[inst]; ok {
				v.failAt(keyField, f, "rename one of the tiers", "node name %q is also a node of tier %q", inst, other)
			}
			instances[inst] = name
		}
	}
	defaults := DefaultTiers()
	for _, name := range sortedKeys(s.off) {
		f := "tiers." + name
		switch {
		case name == RoleEdge || name == RoleApp:
			v.fail(f, "remove \""+name+": off\"; a stack needs an edge and an app tier",
				"the %s tier cannot be turned off", name)
		case s.defaultTiers && defaults[name] == nil && !slices.Contains(Roles, name):
			var optional []string
			for _, d := range sortedKeys(defaults) {
				if d != RoleEdge && d != RoleApp {
					optional = append(optional, d)
				}
			}
			v.fail(f, "turn off one of the default stack's tiers ("+strings.Join(optional, ", ")+"), or list the tiers you want",
				"the default stack has no tier %q to turn off", name)
		}
	}
	for _, r := range []string{RoleEdge, RoleApp} {
		if _, ok := roles[r]; !ok && !s.off[r] {
			v.fail("tiers", fmt.Sprintf("add a tier \"%s:\" under tiers (or remove tiers: for the default stack)", r), "the stack has no %s tier", r)
		}
	}
}

func (v *validator) failAt(posField, field, hint, format string, args ...any) {
	v.errs = append(v.errs, &Error{File: v.s.File, Pos: v.s.Pos(posField), Field: field, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// InstanceNames expands a tier into its node names. App tiers are always
// numbered (app-1, app-2, ...) so that scaling never renames a node; other
// tiers are numbered only when they have more than one replica.
func InstanceNames(t *Tier) []string {
	if t.Replicas <= 1 && t.Role != RoleApp {
		return []string{t.Name}
	}
	out := make([]string, max(t.Replicas, 1))
	for i := range out {
		out[i] = t.Name + "-" + strconv.Itoa(i+1)
	}
	return out
}

func (v *validator) site(env Env) {
	s := v.s
	dir := s.Path(s.Site.Dir)
	if env.DirExists != nil && !env.DirExists(dir) {
		v.fail("site.dir", "create it, or run \"bulkhead init\" for a sample site", "directory %s does not exist", dir)
	}
	for i, p := range s.Site.Static {
		if !prefixRE.MatchString(p) && !globRE.MatchString(p) {
			v.fail(fmt.Sprintf("site.static[%d]", i), "write a path prefix ending in \"/\" like /assets/, or a glob like *.css",
				"%q is neither a path prefix nor an extension glob", p)
		}
	}
	if !sqlNameRE.MatchString(s.Site.Database.Name) {
		v.fail("site.database.name", "use lowercase letters, digits and underscores, at most 32", "%q is not a valid database name", s.Site.Database.Name)
	}
	if !sqlNameRE.MatchString(s.Site.Database.User) {
		v.fail("site.database.user", "use lowercase letters, digits and underscores, at most 32", "%q is not a valid database user", s.Site.Database.User)
	}
	for i, w := range s.Site.Writable {
		clean := path.Clean(w)
		if !sitePathRE.MatchString(w) || clean != w || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			v.fail(fmt.Sprintf("site.writable[%d]", i), "write a path inside the site, like uploads", "%q is not a clean relative path inside the site", w)
		}
	}
	if !checkPathRE.MatchString(s.Site.Check) {
		v.fail("site.check", "write a request path starting with /, like /healthz", "%q is not a request path", s.Site.Check)
	}
}

// checkPathRE is a request path with an optional query, in printable
// ASCII without spaces.
var checkPathRE = regexp.MustCompile(`^/[!-~]{0,200}$`)

func (v *validator) flows() {
	for i, f := range v.s.Flows {
		field := fmt.Sprintf("flows[%d]", i)
		for _, end := range []struct{ key, val string }{{"from", f.From}, {"to", f.To}} {
			if _, ok := v.s.Tiers[end.val]; !ok {
				v.fail(field+"."+end.key, "name one of the tiers: "+strings.Join(sortedKeys(v.s.Tiers), ", "), "unknown node %q", end.val)
			}
		}
		if f.Port < 1 || f.Port > 65535 {
			v.fail(field+".port", "use a port from 1 to 65535", "port %d is out of range", f.Port)
		}
		if f.Proto != "tcp" && f.Proto != "udp" {
			v.fail(field+".proto", "use tcp or udp", "unknown protocol %q", f.Proto)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// mail checks the mail section against the mail tier: one needs the
// other, and the smarthost must be an address the host can send to
// without giving a stack address a way off the machine.
func (v *validator) mail(env Env) {
	s := v.s
	m := s.Mail
	tier := s.ByRole(RoleMail)
	if m == nil {
		return
	}
	if tier == nil {
		v.fail("mail", "add a tier \"mail:\" under tiers, or remove mail:", "mail settings, but the stack has no mail tier to use them")
	}
	if m.Smarthost != "" {
		v.smarthost(m.Smarthost)
	}
	if !slices.Contains(TLSLevels, m.TLS) {
		v.fail("mail.tls", "use one of: "+strings.Join(TLSLevels, ", "), "unknown TLS level %q", m.TLS)
	}
	if m.Smarthost == "" {
		for _, f := range []struct{ field, val string }{{"mail.tls_name", m.TLSName}, {"mail.ca_file", m.CAFile}, {"mail.username", m.Username}, {"mail.password_file", m.PasswordFile}} {
			if f.val != "" {
				v.fail(f.field, "set mail.smarthost too, or remove it", "%s is for the connection to a smarthost, and there is none", f.field)
			}
		}
		if s.Written("mail.tls") {
			v.fail("mail.tls", "set mail.smarthost too, or remove it", "mail.tls is for the connection to a smarthost, and there is none")
		}
		return
	}
	switch {
	case m.TLS == TLSVerify && m.TLSName == "":
		v.fail("mail.tls", "set mail.tls_name to the name in the smarthost's certificate, like smtp.example.com", "tls: verify needs the name to check the certificate against")
	case m.TLS == TLSVerify && m.CAFile == "":
		v.fail("mail.tls", "set mail.ca_file to a PEM file of the authorities that sign the smarthost's certificate", "tls: verify needs the authorities to check the certificate against; nodes carry no system CA store")
	case m.TLS != TLSVerify && m.TLSName != "":
		v.fail("mail.tls_name", "set tls: verify, or remove tls_name", "tls_name is checked only with tls: verify, and tls is %s", m.TLS)
	case m.TLS != TLSVerify && m.CAFile != "":
		v.fail("mail.ca_file", "set tls: verify, or remove ca_file", "ca_file is used only with tls: verify, and tls is %s", m.TLS)
	}
	if m.TLSName != "" && !domainRE.MatchString(m.TLSName) {
		v.fail("mail.tls_name", "write a host name such as smtp.example.com", "%q is not a host name", m.TLSName)
	}
	switch {
	case m.Username != "" && m.PasswordFile == "":
		v.fail("mail.username", "set mail.password_file to a file that holds the password", "a username without a password")
	case m.PasswordFile != "" && m.Username == "":
		v.fail("mail.password_file", "set mail.username too", "a password without a username")
	case m.Username != "" && m.TLS != TLSEncrypt && m.TLS != TLSVerify:
		v.fail("mail.username", "set tls: encrypt or tls: verify", "the relay would send the password over a connection that may not be encrypted (tls is %s)", m.TLS)
	}
	if strings.ContainsAny(m.Username, " \t\n\r:") {
		v.fail("mail.username", "write the login name alone", "%q holds a space, a colon or a line break", m.Username)
	}
	for _, f := range []struct{ field, path string }{{"mail.password_file", m.PasswordFile}, {"mail.ca_file", m.CAFile}} {
		if f.path != "" && env.FileExists != nil && !env.FileExists(s.Path(f.path)) {
			v.fail(f.field, "give the path of an existing file, relative to the stack file", "file %s does not exist", s.Path(f.path))
		}
	}
}

// smarthost checks mail.smarthost: an IPv4 address and port beyond the
// stack's subnets and the host's loopback.
func (v *validator) smarthost(text string) {
	const field = "mail.smarthost"
	host, port, ok := strings.Cut(text, ":")
	if !ok || strings.Contains(port, ":") {
		v.fail(field, "write IPV4:PORT, like 192.0.2.25:587", "%q is not an IPv4 address and port", text)
		return
	}
	a, err := parseAddr(host)
	switch {
	case err != nil && domainRE.MatchString(host):
		v.fail(field, "write the smarthost's IPv4 address, like 192.0.2.25:587; the relay resolves no names (no node has DNS) and the host forwards to one address only", "%q is a name, not an address", host)
		return
	case err != nil:
		v.fail(field, "write IPV4:PORT, like 192.0.2.25:587", "%v", err)
		return
	case !a.Is4():
		v.fail(field, "write an IPv4 address; stack nodes have IPv4 only", "%s is not IPv4", a)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || (len(port) > 1 && port[0] == '0') {
		v.fail(field, "use a port from 1 to 65535, like 587 or 25", "port %q is out of range", port)
	}
	switch {
	case a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		v.fail(field, "name a mail server on another machine, or in a network namespace of its own", "%s cannot be a smarthost: nodes never reach the host's loopback or a broadcast or link-local address", a)
	default:
		for _, n := range []struct {
			name string
			p    netip.Prefix
		}{{"networks.private", v.s.Networks.Private}, {"networks.public", v.s.Networks.Public}, {"networks.dmz", v.s.Networks.DMZ}} {
			if n.p.IsValid() && n.p.Contains(a) {
				v.fail(field, "name a server outside the stack", "%s is inside the stack's own subnet %s (%s)", a, n.p, n.name)
			}
		}
	}
}
