// Package service says what a node agent runs: the contract between render,
// which writes services.json, and the agent, which reads it. It is pure data,
// so that the agent, PID 1 of every node, need not link the renderer.
package service

// Service is one daemon a node's agent runs in the foreground. Its JSON form
// is services.json, one array of these per node.
type Service struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	// Setup runs once before the first start, to completion (e.g. a
	// database's datadir initialisation); it is skipped when Creates exists.
	Setup   []string `json:"setup,omitempty"`
	Creates string   `json:"creates,omitempty"`
	// Ready lists addresses (host:port) that must accept TCP connections
	// before the service counts as healthy: running is not serving.
	Ready []string `json:"ready,omitempty"`
	// Init runs after every start, once the daemon accepts connections,
	// until it succeeds; the service is not ready before. It must be
	// idempotent (e.g. PostgreSQL's role and database, which have no init
	// file).
	Init []string `json:"init,omitempty"`
	// Reload says how the running daemon takes changed configs without
	// a restart; nil means it cannot, and a change restarts the node.
	Reload *Reload `json:"reload,omitempty"`
	// AccessLog is a log of requests the daemon writes in the combined
	// format with the request's time in seconds appended, from which the
	// agent counts responses by status class and times them; empty for
	// none.
	AccessLog string `json:"access_log,omitempty"`
	// Stats, if set, is where the agent reads the daemon's own figures
	// to serve them as metrics, where no exporter does.
	Stats *Stats `json:"stats,omitempty"`
}

// Stats is a daemon's figures that the agent translates into metrics.
type Stats struct {
	// Format is what the agent reads: "memcached" (its stats command)
	// or "php-fpm" (its status page in JSON, over HTTP at URL).
	Format string `json:"format"`
	// Addr is memcached's host:port; URL is php-fpm's status page.
	Addr string `json:"addr,omitempty"`
	URL  string `json:"url,omitempty"`
}

// Reload is how a running daemon applies changed configs: Signal, if set,
// goes to its main process (or Command to its Socket) (nginx, sshd and postgres re-read their files
// on HUP; haproxy's master starts new workers on USR2), then Argv, if set,
// runs to completion (e.g. the database's idempotent init, which applies
// changed grants). The daemon then has to accept connections on its Ready
// addresses again.
type Reload struct {
	Signal string   `json:"signal,omitempty"` // HUP, USR1 or USR2
	Argv   []string `json:"argv,omitempty"`
	// Socket and Command, if set, ask instead of signalling: Command and
	// a newline go to the unix socket Socket, and the daemon's reply is
	// read to its end. A daemon answers only once it can act on it,
	// where a signal that comes too early is lost (haproxy's master
	// ignores USR2 until its loop runs).
	Socket  string `json:"socket,omitempty"`
	Command string `json:"command,omitempty"`
	// Replaces says that the daemon reloads by starting new child
	// processes and retiring its old ones once they finish what they
	// serve (nginx's workers, haproxy's): the reload is done, and every
	// request meets the new configuration, only when every old child has
	// exited and a new one runs.
	Replaces bool `json:"replaces,omitempty"`
}
