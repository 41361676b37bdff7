package render

import (
	"path"
	"strconv"

	"github.com/bulkhead/bulkhead/internal/plan"
	"github.com/bulkhead/bulkhead/internal/service"
	"github.com/bulkhead/bulkhead/internal/spec"
)

// cacheMB is how much memory the cache may fill with items: three quarters
// of the node's limit, leaving the rest for connections, the hash table and
// allocator overhead, so the cgroup never OOM-kills the cache.
func cacheMB(n *plan.Node) int64 {
	return max(n.Memory*3/4>>20, 16)
}

// cacheConnections is memcached's connection limit: two for each PHP worker
// of the app nodes that reach n (the site's kept connection, and one a
// session opens for its request) and some for health checks, rounded up to
// a power of two from memcached's default of 1024, so that a growing app
// pool restarts the cache only when it crosses one.
func cacheConnections(p *plan.Plan, n *plan.Node) int {
	workers := 0
	seen := map[string]bool{}
	for _, f := range p.Flows {
		if f.To != n.Tier {
			continue
		}
		for _, d := range p.Tier(f.From) {
			if d.Role == spec.RoleApp && !seen[d.Name] {
				seen[d.Name] = true
				workers += dbAppWorkers(d)
			}
		}
	}
	c := 1024
	for c < 2*workers+64 {
		c *= 2
	}
	return c
}

// cacheMemcached runs memcached from flags alone; it has no config file.
func cacheMemcached(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	listen, err := inboundAddrs(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	// The agent runs daemons as root, which memcached refuses without -u;
	// -u also drops root before any client connects.
	argv := []string{"memcached", "-u", "memcache"}
	for _, a := range listen {
		argv = append(argv, "-l", a.Addr().String())
	}
	argv = append(argv,
		"-p", strconv.Itoa(int(listen[0].Port())),
		"-U", "0", // no UDP: it is unauthenticated and amplifies
		"-m", strconv.FormatInt(cacheMB(n), 10),
		"-c", strconv.Itoa(cacheConnections(p, n)),
		"-X", // no stats cachedump / lru_crawler metadump
		"-W", // no watch: it streams every key to any client
		"-v",
	)
	// Debian packages no exporter for memcached: with a monitor, the agent
	// reads its stats itself.
	return nil, []service.Service{{Name: "memcached", Argv: argv, Stats: statsOf(n, in)}}, nil
}

// redisConf is what templates/cache-redis.conf.tmpl sees.
type redisConf struct {
	Node  string
	Bind  []string
	Port  int
	Pid   string
	Dir   string
	MaxMB int64
}

// cacheRedis runs redis as a pure cache: no persistence, LRU eviction.
func cacheRedis(p *plan.Plan, n *plan.Node, in Input) ([]File, []service.Service, error) {
	listen, err := inboundAddrs(p, n, in)
	if err != nil {
		return nil, nil, err
	}
	run := path.Join(in.Layout.Run, "redis")
	c := redisConf{
		Node:  n.Name,
		Port:  int(listen[0].Port()),
		Pid:   path.Join(run, "redis.pid"),
		Dir:   in.Layout.Data,
		MaxMB: cacheMB(n),
	}
	for _, a := range listen {
		c.Bind = append(c.Bind, a.Addr().String())
	}
	conf, err := execTemplate("cache-redis.conf.tmpl", c)
	if err != nil {
		return nil, nil, err
	}
	file := in.Layout.conf("redis.conf")
	svc := service.Service{
		Name: "redis",
		// redis has no -u of its own: setpriv drops root (and with it every
		// capability) before redis reads a byte from the network.
		Argv: []string{"setpriv", "--reuid=redis", "--regid=redis", "--init-groups", "--", "redis-server", file},
		// Its pid file's directory, on the node's tmpfs, must be redis's.
		Setup:   []string{"install", "-d", "-o", "redis", "-g", "redis", "-m", "0750", run},
		Creates: run,
	}
	svcs, err := withExporter(n, in, exporterDaemon{Addr: hostPort(listenHost(listen[0], in), c.Port)}, []service.Service{svc})
	return []File{{Path: "redis.conf", Mode: 0o644, Data: conf}}, svcs, err
}
