package spec

import (
	"net/netip"
	"sort"

	"github.com/bulkhead/bulkhead/internal/catalog"
)

// Defaults for fields a stack file leaves out.
var (
	DefaultName    = "bulkhead"
	DefaultDomain  = "localhost"
	DefaultPrivate = netip.MustParsePrefix("10.77.0.0/24")
	DefaultPublic  = netip.MustParsePrefix("10.77.1.0/28")
	DefaultHTTP    = netip.MustParseAddrPort("127.0.0.1:8080")
	DefaultHTTPS   = netip.MustParseAddrPort("127.0.0.1:8443")
	DefaultStatic  = []string{"/assets/", "/uploads/", "*.css", "*.js", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.svg", "*.ico", "*.webp", "*.woff2"}
	DefaultPids    = 512
)

// DefaultMemory is each role's memory limit when a tier sets none.
var DefaultMemory = map[string]ByteSize{
	RoleEdge:    256 << 20,
	RoleStatic:  128 << 20,
	RoleApp:     512 << 20,
	RoleCache:   256 << 20,
	RoleDB:      1 << 30,
	RoleStorage: 256 << 20,
	RoleMonitor: 256 << 20,
	RoleMail:    128 << 20,
}

// DefaultDisk is each role's disk size when a tier sets none. The default
// stack's nodes add up to 10368M (9856M without its monitor), which a small host with a 20G disk and
// its operating system on it still has free. The db and storage hold the site's data and get room to grow;
// edge, static and app write only logs and temporary files; the cache
// keeps everything in memory and writes only logs.
var DefaultDisk = map[string]ByteSize{
	RoleEdge:    256 << 20,
	RoleStatic:  256 << 20,
	RoleApp:     512 << 20,
	RoleCache:   128 << 20,
	RoleDB:      4 << 30,
	RoleStorage: 4 << 30,
	RoleMonitor: 512 << 20,
	RoleMail:    256 << 20,
}

// MinDisk is the least disk each role works with. An ext4 image of 64M
// spends some 4M on its journal and inode tables, and leaves room for
// logs. A fresh MariaDB datadir takes about 130M (ibdata1, a 96M redo log
// and the system tables) and a fresh PostgreSQL one about 40M plus WAL, so
// the db needs 256M; storage keeps its SFTP server's state and logs.
var MinDisk = map[string]ByteSize{
	RoleEdge:    64 << 20,
	RoleStatic:  64 << 20,
	RoleApp:     64 << 20,
	RoleCache:   64 << 20,
	RoleDB:      256 << 20,
	RoleStorage: 128 << 20,
	RoleMonitor: 128 << 20,
	RoleMail:    64 << 20,
}

// DefaultCPU is each role's CPU weight when a tier sets none; 100 is an
// even share. Every request passes through the edge, and every app node
// waits on the single db, so those two get twice an app node's share when
// the host is busy.
var DefaultCPU = map[string]int{
	RoleEdge:    200,
	RoleStatic:  100,
	RoleApp:     100,
	RoleCache:   100,
	RoleDB:      200,
	RoleStorage: 100,
	// The monitor serves no visitor: it yields to the tiers that do.
	RoleMonitor: 50,
	// The relay serves no visitor either; mail can wait.
	RoleMail: 50,
}

// MaxCPU is the largest CPU weight, as cgroup v2's cpu.weight.
const MaxCPU = 10000

// Each SFTP client of the storage node (every static and app node) holds
// an sshd session of two processes, and verify or a reconnecting pool opens
// as many unauthenticated ones again at once. These are the storage
// node's needs per client, measured at 102 clients: at 256M the node ran
// out of memory.
const (
	StorageMemoryPerClient ByteSize = 8 << 20
	StoragePidsPerClient            = 4
)

// StorageNeeds returns the least memory and pids a storage node with
// clients SFTP clients needs.
func StorageNeeds(clients int) (ByteSize, int) {
	return ByteSize(clients) * StorageMemoryPerClient, clients*StoragePidsPerClient + 32
}

// storageClients counts the nodes that mount the storage node's files.
func storageClients(s *Stack) int {
	n := 0
	for _, t := range s.Tiers {
		if t.Role == RoleApp || t.Role == RoleStatic {
			n += max(t.Replicas, 1)
		}
	}
	return n
}

// DefaultTiers is the seven-node stack of DESIGN.md (edge, static, app ×2,
// cache, db, storage) and the monitor that watches it: the monitor is on
// unless a stack file turns it off ("monitor: off") or lists its tiers
// without it.
func DefaultTiers() map[string]*Tier {
	return map[string]*Tier{
		RoleEdge:    {Role: RoleEdge},
		RoleStatic:  {Role: RoleStatic},
		RoleApp:     {Role: RoleApp, Replicas: 2},
		RoleCache:   {Role: RoleCache},
		RoleDB:      {Role: RoleDB},
		RoleStorage: {Role: RoleStorage},
		RoleMonitor: {Role: RoleMonitor},
	}
}

// ApplyDefaults fills what the file left out. Parse calls it; it is exported
// for code that builds a Stack without a file.
func ApplyDefaults(s *Stack) {
	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.Domain == "" {
		s.Domain = DefaultDomain
	}
	if !s.Networks.Private.IsValid() {
		s.Networks.Private = DefaultPrivate
	}
	if !s.Networks.Public.IsValid() {
		s.Networks.Public = DefaultPublic
	}
	if !s.Publish.HTTP.IsValid() {
		s.Publish.HTTP = DefaultHTTP
	}
	if !s.Publish.HTTPS.IsValid() {
		s.Publish.HTTPS = DefaultHTTPS
	}
	// A file that lists tiers gets those; one that lists none, or only
	// tiers it turns off, gets the default stack without them.
	if len(s.Tiers) == 0 {
		s.Tiers = DefaultTiers()
		s.defaultTiers = true
		for name := range s.off {
			delete(s.Tiers, name)
		}
	}
	for name, t := range s.Tiers {
		f := "tiers." + name + "."
		t.Name = name
		if t.Role == "" {
			t.Role = name
		}
		// Storage's choice is its protocol, below.
		if t.Software == "" && t.Role != RoleStorage {
			t.Software = catalog.Default(t.Role)
		}
		if t.Role == RoleStorage && t.Protocol == "" {
			t.Protocol = ProtocolAuto
		}
		// A value written as 0 stays 0 so that Validate can reject it.
		if t.Replicas == 0 && !s.written(f+"replicas") {
			t.Replicas = 1
		}
		if t.Memory == 0 && !s.written(f+"memory") {
			t.Memory = DefaultMemory[t.Role]
		}
		if t.Pids == 0 && !s.written(f+"pids") {
			t.Pids = DefaultPids
		}
		if t.Disk == 0 && !s.written(f+"disk") {
			t.Disk = DefaultDisk[t.Role]
		}
		if t.CPU == 0 && !s.written(f+"cpu") {
			t.CPU = DefaultCPU[t.Role]
		}
	}
	// A storage node's defaults grow with its clients, once every tier's
	// replicas are known.
	for name, t := range s.Tiers {
		if t.Role != RoleStorage || t.Protocol == ProtocolNFS {
			continue
		}
		mem, pids := StorageNeeds(storageClients(s))
		f := "tiers." + name + "."
		if !s.written(f+"memory") && t.Memory < mem {
			t.Memory = mem
		}
		if !s.written(f+"pids") && t.Pids < pids {
			t.Pids = pids
		}
	}
	if s.Site.Dir == "" {
		s.Site.Dir = "site"
	}
	if s.Site.Static == nil {
		s.Site.Static = append([]string(nil), DefaultStatic...)
	}
	if s.Site.Database.Name == "" {
		s.Site.Database.Name = "site"
	}
	if s.Site.Database.User == "" {
		s.Site.Database.User = "site"
	}
	if s.Site.Writable == nil {
		s.Site.Writable = []string{"uploads"}
	}
	if s.Site.Check == "" {
		s.Site.Check = "/healthz"
	}
	if s.Mail != nil && s.Mail.TLS == "" {
		s.Mail.TLS = TLSMay
	}
	for i := range s.Flows {
		if s.Flows[i].Proto == "" {
			s.Flows[i].Proto = "tcp"
		}
	}
	if s.pos == nil {
		s.pos = map[string]Pos{"": {1, 1}}
	}
}

// Default returns the built-in default stack, as if read from an empty file.
func Default() *Stack {
	s := &Stack{File: "bulkhead.yaml", Dir: "."}
	ApplyDefaults(s)
	return s
}

func (s *Stack) written(field string) bool {
	_, ok := s.pos[field]
	return ok
}

func sortStrings(s []string) { sort.Strings(s) }

// Written reports whether the stack file gave field (a dotted path such as
// "tiers.app.pids") a value of its own rather than leaving it to a default.
func (s *Stack) Written(field string) bool { return s.written(field) }

// ErrorAt is a problem with field, placed where the file wrote it.
func (s *Stack) ErrorAt(field, msg, hint string) *Error {
	return &Error{File: s.File, Pos: s.Pos(field), Field: field, Msg: msg, Hint: hint}
}
