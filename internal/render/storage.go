package render

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// nfsAnonID is the uid and gid every NFS client is squashed to: www-data on
// Debian, which the app's php-fpm runs as.
const nfsAnonID = 33

// sshKeyRE matches one authorized_keys key without options: type, base64
// blob and an optional comment of printable characters.
var sshKeyRE = regexp.MustCompile(`^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,2}( [\x21-\x7e][\x20-\x7e]*)?$`)

// storageClient is a node that mounts the site from the storage node, at the
// address the storage node sees it from.
type storageClient struct {
	Node  string
	Addr  string // its address, or on a cluster the pod network
	Mount plan.Mount
	Key   string // its SSH public key, for SFTP
}

// sftpConf is what the sshd templates see.
type sftpConf struct {
	Node    string
	Listen  []netip.AddrPort
	HostKey string
	Pid     string
	Keys    string // directory of one authorized_keys file per account
	Chroot  string
	// MaxStartups lets every client connect at once, as all do when the
	// storage node restarts; the firewall admits no one else. It is sized
	// for the largest pools a plan may have, not this one's: sshd applies
	// a change only by re-executing itself, which resets every connection
	// still in its handshake (the new nodes' mounts, when a pool grows),
	// so scaling the pools must not change sshd_config. PerSource bounds
	// what one client may hold, a node whose root is an attacker's
	// included.
	MaxStartups string
	PerSource   int
}

// sftpMaxClients is the most nodes a storage node can have as clients: a
// static and an app tier of the most replicas a tier may have.
const sftpMaxClients = 2 * spec.MaxReplicas

// sftpKeys is one account's authorized_keys file.
type sftpKeys struct {
	Node, User, Who string
	Clients         []storageClient
}

// storageSFTP renders sshd serving the site over SFTP only: one chrooted
// read-only account for the static tier and one for the app tier, whose
// writes are limited by file ownership.
func storageSFTP(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	l := in.Layout
	clients, listen, err := storageClients(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	c := sftpConf{
		Node:        n.Name,
		HostKey:     l.secret("ssh_host_ed25519_key"),
		Pid:         path.Join(l.Run, "sshd.pid"),
		Keys:        l.conf("authorized_keys"),
		Chroot:      storageSite(l),
		MaxStartups: fmt.Sprintf("%d:30:%d", sftpMaxClients+10, 2*(sftpMaxClients+10)),
		// A node's mount connects once, and once again when it is
		// made afresh while the old one is still timing out.
		PerSource: 3,
	}
	if err := plainPaths(c.HostKey, c.Pid, c.Keys, c.Chroot); err != nil {
		return nil, nil, err
	}
	for _, a := range listen {
		c.Listen = append(c.Listen, netip.AddrPortFrom(a, uint16(n.Listens[0].Number)))
	}
	if len(in.Secrets.StorageHostKey) == 0 {
		return nil, nil, fmt.Errorf("no SSH host key for the storage node in the secrets")
	}
	ro := sftpKeys{Node: n.Name, User: plan.AccountReader, Who: "the static tier, read-only"}
	rw := sftpKeys{Node: n.Name, User: plan.AccountWriter, Who: "the app tier, read-write where site-rw owns the files"}
	for _, cl := range clients {
		key := strings.TrimSpace(in.Secrets.StorageKeys[cl.Node])
		if key == "" {
			return nil, nil, fmt.Errorf("no SSH key for storage client %s in the secrets", cl.Node)
		}
		if !sshKeyRE.MatchString(key) {
			return nil, nil, fmt.Errorf("the SSH key of storage client %s is not one authorized_keys line without options", cl.Node)
		}
		cl.Key = key
		switch cl.Mount.Account {
		case plan.AccountReader:
			ro.Clients = append(ro.Clients, cl)
		case plan.AccountWriter:
			rw.Clients = append(rw.Clients, cl)
		}
	}
	conf, err := execTemplate("storage-sshd_config.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	files := []File{
		{Path: "sshd_config", Mode: 0o644, Data: conf, OnChange: Reload},
		{Path: SecretsDir + "/ssh_host_ed25519_key", Mode: 0o400, Data: in.Secrets.StorageHostKey, OnChange: Reload},
	}
	for _, k := range []sftpKeys{ro, rw} {
		data, err := execTemplate("storage-authorized_keys.tmpl", k)
		if err != nil {
			return nil, nil, err
		}
		// Root-owned and not writable by the accounts, as StrictModes
		// requires and as the read-only conf mount guarantees.
		// sshd reads them at every login.
		files = append(files, File{Path: "authorized_keys/" + k.User, Mode: 0o644, Data: data, OnChange: Live})
	}
	svc := service.Service{
		Name: "sshd",
		// sshd re-executes itself and so insists on an absolute path.
		Argv: []string{"/usr/sbin/sshd", "-D", "-e", "-f", l.conf("sshd_config")},
		// The privilege separation directory is compiled into sshd.
		Setup:   []string{"install", "-d", "-m", "0755", "/run/sshd"},
		Creates: "/run/sshd",
		// On HUP sshd re-executes itself with the new config; the
		// sessions it serves (the site mounts) go on.
		Reload: &service.Reload{Signal: "HUP"},
	}
	return files, []service.Service{svc}, nil
}

// nfsConf is what the ganesha template sees.
type nfsConf struct {
	Node     string
	Bind     netip.Addr
	Port     int
	Run      string
	Recovery string
	AnonID   int
	Exports  []nfsExport
}

type nfsExport struct {
	ID      int
	Path    string
	Pseudo  string
	FSAL    string
	Why     string
	Clients []nfsClients
}

// nfsClients is one CLIENT block: the addresses of one tier and what they
// may do.
type nfsClients struct {
	Who    string
	Addrs  []string
	Access string
}

// storageNFS renders nfs-ganesha exporting the site over NFSv4: the site
// read-only to the static and app tiers, and each writable path as its own
// export that the app tier may write.
func storageNFS(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	l := in.Layout
	clients, listen, err := storageClients(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	if in.Cluster != nil {
		// Every client comes from the pod network, so addresses cannot
		// tell static pods from app pods; and on a cluster pods read and
		// write the site through its claim, not over NFS. Everything is
		// read-only to the pod network.
		for i := range clients {
			clients[i].Mount.ReadOnly = true
		}
	}
	if len(listen) != 1 {
		return nil, nil, fmt.Errorf("nfs-ganesha binds one address, but clients reach %s on %v", n.Name, listen)
	}
	c := nfsConf{
		Node:     n.Name,
		Bind:     listen[0],
		Port:     n.Listens[0].Number,
		Run:      l.Run,
		Recovery: path.Join(l.Data, "ganesha"),
		AnonID:   nfsAnonID,
	}
	site := storageSite(l)
	paths := []string{c.Run, c.Recovery, site}
	var static, app, all []string
	for _, cl := range clients {
		a := cl.Addr
		if slices.Contains(all, a) {
			continue
		}
		all = append(all, a)
		if cl.Mount.ReadOnly {
			static = append(static, a)
		} else {
			app = append(app, a)
		}
	}
	blocks := func(pairs ...nfsClients) []nfsClients {
		var out []nfsClients
		for _, b := range pairs {
			if len(b.Addrs) > 0 {
				out = append(out, b)
			}
		}
		return out
	}
	c.Exports = []nfsExport{
		{
			ID: 0, Path: "/", Pseudo: "/", FSAL: "PSEUDO",
			Why:     "The NFSv4 pseudo root: clients may only look up the exports below it.",
			Clients: blocks(nfsClients{"static and app nodes", all, "MDONLY_RO"}),
		},
		{
			ID: 1, Path: site, Pseudo: "/site", FSAL: "VFS",
			Why: "The site: read-only to everyone.",
			Clients: blocks(
				nfsClients{"static nodes", static, "RO"},
				nfsClients{"app nodes", app, "RO"}),
		},
	}
	for i, w := range p.Site.Writable {
		e := nfsExport{
			ID: 2 + i, Path: path.Join(site, w), Pseudo: path.Join("/site", w), FSAL: "VFS",
			Why: fmt.Sprintf("Writable path %s: the app nodes write it, the static nodes read it.", w),
			Clients: blocks(
				nfsClients{"app nodes", app, "RW"},
				nfsClients{"static nodes", static, "RO"}),
		}
		paths = append(paths, e.Path, e.Pseudo)
		c.Exports = append(c.Exports, e)
	}
	if err := plainPaths(paths...); err != nil {
		return nil, nil, err
	}
	conf, err := execTemplate("storage-ganesha.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	files := []File{{Path: "ganesha.conf", Mode: 0o644, Data: conf}}
	svc := service.Service{
		Name: "ganesha",
		Argv: []string{"ganesha.nfsd", "-F", "-L", "STDERR", "-f", l.conf("ganesha.conf"), "-p", path.Join(l.Run, "ganesha.pid")},
	}
	return files, []service.Service{svc}, nil
}

// storageClients returns the nodes that mount the site from n, in plan
// order, and n's addresses on the networks they mount it over: the only
// addresses it listens on (on a cluster, any address: see Input.bind).
func storageClients(p *plan.Plan, n *plan.Node, in Input) ([]storageClient, []netip.Addr, error) {
	if len(n.Listens) != 1 {
		return nil, nil, fmt.Errorf("a storage node serves one port, not %v", n.Listens)
	}
	var clients []storageClient
	var listen []netip.Addr
	for _, d := range p.Nodes {
		m := d.Mount
		if m == nil || m.Storage != n.Name {
			continue
		}
		a := m.Addr
		if in.Cluster != nil {
			a = netip.IPv4Unspecified()
		}
		if !slices.Contains(listen, a) {
			listen = append(listen, a)
		}
		client := netip.PrefixFrom(m.Client, m.Client.BitLen())
		if in.Cluster != nil {
			client = in.Cluster.PodCIDR
		}
		clients = append(clients, storageClient{Node: d.Name, Addr: hostOrNet(client), Mount: *m})
	}
	if len(clients) == 0 {
		return nil, nil, fmt.Errorf("no static or app node mounts the site from %s, so nobody could use the storage", n.Name)
	}
	return clients, listen, nil
}

// storageSite is the directory the storage node serves: the site's files.
func storageSite(l Layout) string { return path.Join(l.Data, "site") }
