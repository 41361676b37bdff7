#!/usr/bin/env bash
# bench/dataplane.sh: what the split costs a visitor. Part of bench/run,
# which runs it and turns what it writes into the results; run it alone only
# to work on it.
#
# Measures the default bulkhead stack (edge nginx -> static lighttpd / app x2
# apache2+php-fpm -> memcached, mariadb; site over sshfs from storage) against
# a monolithic baseline: the same daemons and the same site in ONE network
# namespace, with no edge and no containers. Both run on this host in the
# same invocation, in interleaved rounds, with the same wrk parameters.
#
#   split      wrk in bh-bench-outside, the namespace `bulkhead up` makes on
#              the stack's public bridge for verify's outside vantage point,
#              against the edge's public address: the path a visitor takes
#              in production, where the edge's public side faces the internet
#   mono       wrk inside netns bhbench-mono -> 127.0.0.1:80 apache2 (static
#              files itself, PHP via proxy_fcgi to php-fpm's unix socket),
#              memcached and mariadb on 127.0.0.1 in the same namespace
#   published  wrk on the host -> 127.0.0.1:19080, the published port: the
#              host's DNAT to the edge's public address (and SNAT to the
#              public gateway, as for any loopback client), then the edge.
#              published/split is what the published port costs a visitor
#              against the edge's own address (#14: goal >= 0.9)
#   nosandbox  a second split stack, "benchns", brought up with `bulkhead
#              up --unsafe-no-sandbox` from the same site copy: its nodes
#              run without user namespaces and seccomp. wrk in its own
#              outside namespace against its edge's public address, as for
#              split; run right next to split in every round, on the
#              workloads in NOSANDBOX_WORKLOADS, to measure what the sandbox
#              costs. Only one stack is under load at a time: the other one
#              idles
#   split:LEVER=STATE  the split stack with one lever of its rendered
#              configs set the other way (see LEVERS below), to measure what
#              each lever is worth; then set back
#
# Workloads: small (a 3 KB css file), large (a 1 MB file), cached (GET /, the
# post list from memcached), miss (GET /bench/miss.php: / after dropping the
# cached list, so a db read), post (POST /posts: a new post, a db write).
# The benchmark adds the files and the miss page to its own copy of the
# sample site.
#
# The mono configs are bulkhead's own app-1/db/cache configs, rendered by
# bench/mono from the split's plan with every node on 127.0.0.1 and paths
# under the work directory, so both sides run the same apache MPM, php-fpm
# pool, mariadb and memcached settings.
#
# Usage (root, Debian 12, wrk installed):
#   bench/dataplane.sh --data DIR     full run: 3 rounds of 2 s runs
#   bench/dataplane.sh --quick ...    1 round of 1 s runs (for CI)
# Options: --rounds N, --duration SECONDS, --connections N, --threads N,
#          --bin BULKHEAD (else it builds one), --data DIR (where the raw
#          results go: dataplane.tsv, dataplane-meta.tsv and, when a run
#          had errors, dataplane-diagnostics.md), --keep (keep the work
#          directory), --setups "split mono ..." and --workloads "cached
#          ..." (only these, when working on one thing; the report needs
#          split and mono for a ratio), --levers "keepalive ..." (only
#          these levers; "" for none), -h.
#
# CPU per request: every run also reads the CPU time of each node's cgroup
# (runc's, one per container) and of one cgroup per mono daemon that the
# script makes, before and after wrk, and the host's softirq time from
# /proc/stat; dataplane-cgroups.tsv holds the deltas, which the report turns
# into milliseconds of CPU per request by group, split against mono.
#
# It asserts no speed. Exit status: 0 when everything ran; 1 when something
# is broken (build, stack or baseline would not come up, a page was not 200,
# wrk reported errors or failed, a lever could not be set, or cleanup left
# something behind); 2 for a usage mistake.
#
# Only its own objects: stacks "bench" (10.240.0.0/24, 10.240.1.0/28,
# 127.0.0.1:19080/19081) and "benchns" (10.240.2.0/24, 10.240.3.0/28,
# 127.0.0.1:19082/19083), netns bhbench-mono, the cgroups bhbench-mono-*
# (one per mono daemon, for its CPU time), a mktemp work directory, and
# the lock /run/lock/bhbench-dataplane.lock while it runs. It stops only
# processes it started, by PID, and cleans up on any exit; a stack "bench"
# or "benchns", or an empty netns bhbench-mono, left by a run that was
# killed is removed first.
set -euo pipefail
started=$(date +%s) me=dataplane.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

STACK=bench
PRIVATE_NET=10.240.0.0/24
PUBLIC_NET=10.240.1.0/28
HTTP_PUB=127.0.0.1:19080
HTTPS_PUB=127.0.0.1:19081
MONO_NS=bhbench-mono
# The mono daemons' cgroups, one per daemon, for their CPU time: cgroup v1's
# cpuacct hierarchy where it is mounted (Debian 12 hosts with hybrid
# cgroups), else the unified hierarchy.
if [[ -e /sys/fs/cgroup/cpuacct/cpuacct.usage ]]; then CG_ROOT=/sys/fs/cgroup/cpuacct; else CG_ROOT=/sys/fs/cgroup; fi
MONO_CG=$CG_ROOT/bhbench-mono
OUTSIDE_NS=bh-$STACK-outside
# The unsandboxed twin of the split stack: the same stack file but for its
# name, subnets and ports.
NS_STACK=benchns
NS_PRIVATE_NET=10.240.2.0/24
NS_PUBLIC_NET=10.240.3.0/28
NS_HTTP_PUB=127.0.0.1:19082
NS_HTTPS_PUB=127.0.0.1:19083
NS_OUTSIDE_NS=bh-$NS_STACK-outside
STACKS=("$STACK" "$NS_STACK")

# Workloads: name, method, path. The order is the order of the runs.
WORKLOADS=(small large cached miss post)
declare -A METHOD=([small]=GET [large]=GET [cached]=GET [miss]=GET [post]=POST)
declare -A URLPATH=([small]=/assets/bench/small.css [large]=/assets/bench/1m.bin [cached]=/ [miss]=/bench/miss.php [post]=/posts)
# The published port: two workloads show what it costs.
PUBLISHED_WORKLOADS=(small cached)
# The sandbox's cost: the workloads whose requests are mostly system calls
# (the large file is mostly copying, and would cost a run more per round).
NOSANDBOX_WORKLOADS=(small cached miss post)

# Levers: settings of the rendered configs whose worth each round measures
# by running the split with the lever set the other way. ON is the tuned
# state; the rendered default should be ON for every lever (the run says so
# in its metadata when it is not).
LEVERS=(keepalive microcache fpm-static fpm-recycle opcache sets-100 edge-workers edge-buffers app-buffer edge-pcre-jit edge-log fpm-children)
declare -A LEVER_WORKLOADS=(
	[keepalive]="cached" # static answers come from the micro-cache
	[microcache]="small large"
	[fpm-static]="cached"
	[fpm-recycle]="cached"
	[opcache]="cached"
	[sets-100]="small cached"
	[edge-workers]="cached miss post"
	[edge-buffers]="cached miss post"
	[app-buffer]="cached miss"
	[edge-pcre-jit]="cached post"
	[edge-log]="cached post"
	[fpm-children]="cached miss post"
)
declare -A LEVER_DOC=(
	[keepalive]="edge nginx: upstream keepalive connections to static and app (keepalive N in the upstream blocks); off: a new TCP connection per request"
	[microcache]="edge nginx: micro-cache of static responses for 1 s (proxy_cache static); off: every request goes to the static node"
	[fpm-static]="app php-fpm: pm = static, every worker started up front; off: pm = dynamic, workers forked on demand"
	[fpm-recycle]="app php-fpm: pm.max_requests = 10000; off: 500, a worker is replaced after 500 requests (every few seconds under load)"
	[opcache]="app php-fpm: opcache.validate_timestamps off, as for a release (never changes); off: opcache checks each file's time every 2 s, PHP's default"
	[sets-100]="isolation: every node's nft sets that hold the app pool's addresses hold 100 addresses, as at 100 app nodes; off: the default stack's 2"
	[edge-workers]="edge nginx: worker_processes 1; off: auto (one per core)"
	[edge-buffers]="edge nginx: proxy_buffer_size 16k and proxy_buffers 8 16k, so a page's answer fits one buffer; off: nginx's 4k pages"
	[app-buffer]="app apache2: PHP's answer buffered (mod_buffer, 64 KB) and sent whole, with its Content-Length; off: one chunk per 8 KB record from php-fpm, then the last chunk"
	[edge-pcre-jit]="edge nginx: pcre_jit on, the request-path regexes compiled; off: interpreted"
	[edge-log]="edge nginx: the buffered access log written; off: access_log off (a measurement only: the log is a feature)"
	[fpm-children]="app php-fpm: pm.max_children 3 per app node, as many workers in all as the mono's 6; off: the rendered 6 per node"
)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

quick=0 rounds= duration= conns=32 threads=2 data= keep=0 bin= only_setups= only_workloads= only_levers=-
while (($#)); do
	case $1 in
	--quick) quick=1 ;;
	--rounds) rounds=${2:?--rounds needs a number}; shift ;;
	--duration) duration=${2:?--duration needs seconds}; shift ;;
	--connections) conns=${2:?--connections needs a number}; shift ;;
	--threads) threads=${2:?--threads needs a number}; shift ;;
	--data) data=${2:?--data needs a directory}; shift ;;
	--bin) bin=${2:?--bin needs a file}; shift ;;
	--keep) keep=1 ;;
	--setups) only_setups=${2?--setups needs a list}; shift ;;
	--workloads) only_workloads=${2?--workloads needs a list}; shift ;;
	--levers) only_levers=${2?--levers needs a list}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "dataplane.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
	shift
done
if ((quick)); then
	: "${rounds:=1}" "${duration:=1}"
	warm_first=0 warm_each=0 # it only checks that everything answers
else
	: "${rounds:=3}" "${duration:=2}"
	warm_first=1 warm_each=1
fi
for v in rounds duration conns threads; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "dataplane.sh: --$v must be a positive integer" >&2; exit 2; }
done
WRK_ARGS=(-t"$threads" -c"$conns" -d"${duration}s" --latency)
# subset LIST ALLOWED...: the words of LIST, each of which must be allowed
subset() {
	local w list=$1
	shift
	for w in $list; do
		[[ " $* " == *" $w "* ]] || { echo "dataplane.sh: $w is not one of: $*" >&2; exit 2; }
	done
	echo "$list"
}
if [[ -n $only_workloads ]]; then read -ra WORKLOADS <<<"$(subset "$only_workloads" "${WORKLOADS[@]}")"; fi
if [[ $only_levers != - ]]; then read -ra LEVERS <<<"$(subset "$only_levers" "${LEVERS[@]}")"; fi
# The unsandboxed twin is brought up only when it is measured.
want_ns=1
[[ -z $only_setups || " $only_setups " == *" nosandbox "* ]] || want_ns=0

((EUID == 0)) || die "run as root (it creates network namespaces and a bulkhead stack)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
for c in go wrk curl ip ss awk sed flock nft runc python3; do
	command -v "$c" >/dev/null || die "$c not found (wrk is Debian's wrk)"
done

REPO=$(cd "$(dirname "$0")/.." && pwd)

WORK=$(mktemp -d /tmp/bhbench.XXXXXX)
chmod 755 "$WORK" # www-data and mysql must traverse it to the mono site and datadir
if [[ -z $data ]]; then
	data=$WORK/data
fi
mkdir -p "$data"
data=$(cd "$data" && pwd)
BH=${bin:-$WORK/bulkhead}
STACK_DIR=$WORK/stack
STACK_FILE=$STACK_DIR/bulkhead.yaml
NODES_DIR=/var/lib/bulkhead/$STACK/nodes
NS_STACK_FILE=$WORK/stackns/bulkhead.yaml
M=$WORK/mono
declare -a MONO_PIDS=() MONO_NAMES=()
declare -A UP_TRIED=()
have_lock=0

# --- cleanup, on every exit ------------------------------------------------

leftovers() { # prints what this script's objects left on the host
	local st
	ip netns list 2>/dev/null | awk -v m="$MONO_NS" '$1 == m {print "netns " $1}'
	for d in "$MONO_CG"-*; do [[ ! -d $d ]] || echo "cgroup $d"; done
	awk -v w="$WORK/" -v m="/run/netns/$MONO_NS" 'index($2, w) == 1 || $2 == m {print "mount " $2}' /proc/mounts
	for st in "${STACKS[@]}"; do
		stack_leftovers "$st"
	done
	local pid args
	while read -r pid args; do
		case "$args " in
		*"supervise --stack $STACK "* | *"supervise --stack $NS_STACK "* | *"$M/"* | "$BH "*) echo "process $pid: $args" ;;
		esac
	done < <(ps -eo pid=,args=)
}

cleanup() {
	local rc=$? i pids left
	set +e
	trap - EXIT INT TERM ERR
	if ((!have_lock)); then # another run owns the stack and the namespace
		rm -rf "$WORK"
		exit "$rc"
	fi
	if ((${#MONO_PIDS[@]})); then
		log "stopping the monolithic baseline"
		for ((i = ${#MONO_PIDS[@]} - 1; i >= 0; i--)); do
			stop_pid "${MONO_NAMES[i]}" "${MONO_PIDS[i]}"
		done
	fi
	if [[ -e /run/netns/$MONO_NS ]]; then
		# Children our daemons left behind (they are ours too), by PID.
		pids=$(ip netns pids "$MONO_NS" 2>/dev/null)
		if [[ -n $pids ]]; then
			echo "dataplane.sh: killing leftover processes in $MONO_NS: $pids" >&2
			# shellcheck disable=SC2086
			kill -KILL $pids 2>/dev/null
			sleep 0.5
		fi
		ip netns del "$MONO_NS"
	fi
	rm_mono_cgroups
	for i in "${STACKS[@]}"; do
		if [[ -n ${UP_TRIED[$i]:-} ]]; then
			purge_stack "$i" "${UP_TRIED[$i]}" || rc=1
		fi
	done
	left=$(leftovers)
	if [[ -n $left ]]; then
		printf 'dataplane.sh: cleanup left these behind:\n%s\n' "$left" >&2
		rc=1
	fi
	if ((have_lock)); then
		rm -f "$LOCK"
	fi
	if ((keep)) || [[ -n $left ]] || ((rc != 0)); then
		echo "dataplane.sh: work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
# rm_mono_cgroups: removes the mono daemons' cgroups, once nothing is in
# them; says which ones still hold a process.
rm_mono_cgroups() {
	local d
	for d in "$MONO_CG"-*; do
		[[ -d $d ]] || continue
		rmdir "$d" 2>/dev/null || echo "dataplane.sh: cgroup $d still holds processes: $(tr '\n' ' ' <"$d/cgroup.procs")" >&2
	done
}
trap cleanup EXIT
set -E # say where an unexpected failure happened, even inside a function
trap 'echo "dataplane.sh: line $LINENO: a command failed (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight ---------------------------------------------------------------

take_lock dataplane # LOCK; bulkhead up and the mono daemons start with 9>&-

# The stack names, namespace and ports are this script's own: a stack or
# namespace left by an earlier run that was killed is removed first.
if [[ -e /run/netns/$MONO_NS ]]; then
	stale=$(ip netns pids "$MONO_NS" 2>/dev/null || true)
	[[ -z $stale ]] || die "netns $MONO_NS exists with processes in it ($stale): an earlier run is still going, or left them; stop them, then: ip netns del $MONO_NS"
	ip netns del "$MONO_NS"
fi
for d in "$MONO_CG"-*; do
	[[ -d $d ]] || continue
	[[ ! -s $d/cgroup.procs ]] || die "cgroup $d holds processes ($(tr '\n' ' ' <"$d/cgroup.procs")): an earlier run is still going, or left them; stop them, then: rmdir $d"
	rmdir "$d"
done

if [[ -z $bin ]]; then
	log "building bulkhead into $BH"
	(cd "$REPO" && go build -o "$BH" ./cmd/bulkhead) || die "go build failed"
fi
[[ -x $BH ]] || die "$BH is not an executable"
for st in "${STACKS[@]}"; do
	remove_stale_stack "$st"
done
ports_free "$HTTP_PUB" "$HTTPS_PUB" "$NS_HTTP_PUB" "$NS_HTTPS_PUB"

# --- the split stack -------------------------------------------------------

"$BH" init "$STACK_DIR" >/dev/null
cat >"$STACK_FILE" <<EOF2
# Written by bench/dataplane.sh: the default stack under the benchmark's
# own name, subnets and ports.
name: $STACK
networks:
  private: $PRIVATE_NET
  public: $PUBLIC_NET
publish:
  http: $HTTP_PUB
  https: $HTTPS_PUB
# The data plane without monitoring, as the monolith runs (bench/
# monitoring.sh measures what the monitor costs).
tiers:
  monitor: off
EOF2

# The benchmark's additions to its copy of the sample site: a small and a
# large static file, and a page that reads the db on every request.
mkdir -p "$STACK_DIR/site/assets/bench" "$STACK_DIR/site/bench"
head -c 2304 /dev/urandom | base64 -w 76 | head -c 3072 >"$STACK_DIR/site/assets/bench/small.css"
head -c 1048576 /dev/urandom >"$STACK_DIR/site/assets/bench/1m.bin"
cat >"$STACK_DIR/site/bench/miss.php" <<'EOF2'
<?php
// Added by bench/dataplane.sh: GET / after dropping the cached post list,
// so that every request reads the posts from the db (a cache miss) and
// fills the cache again, as the first visitor after a change does.
declare(strict_types=1);
// A persistent instance, as the site keeps its own: a visitor's request
// pays for no extra TCP connection.
$m = new Memcached('bench-miss');
if ($m->getServerList() === []) {
    $m->addServer((string) getenv('CACHE_HOST'), (int) getenv('CACHE_PORT'));
}
$m->delete('posts:v1');
$_SERVER['REQUEST_URI'] = '/';
require __DIR__ . '/../index.php';
EOF2
grep -q "const POSTS_KEY = 'posts:v1';" "$STACK_DIR/site/lib/posts.php" ||
	die "the sample site's cache key is no longer posts:v1; update bench/miss.php in bench/dataplane.sh"

plan_json "$STACK_FILE" "$WORK/plan.json" "$WORK/render"

# The unsandboxed twin serves the same site directory. Fail closed: its
# rendered configs must be the split's but for the name, the addresses and
# the ports (secrets and keys are generated afresh for each).
mkdir -p "${NS_STACK_FILE%/*}"
cat >"$NS_STACK_FILE" <<EOF2
# Written by bench/dataplane.sh: the default stack under the benchmark's
# own name, subnets and ports, serving the split's site; brought up with
# --unsafe-no-sandbox.
name: $NS_STACK
networks:
  private: $NS_PRIVATE_NET
  public: $NS_PUBLIC_NET
publish:
  http: $NS_HTTP_PUB
  https: $NS_HTTPS_PUB
site:
  dir: $STACK_DIR/site
tiers:
  monitor: off
EOF2
plan_json "$NS_STACK_FILE" "$WORK/plan-ns.json" "$WORK/render-ns"
: >"$WORK/twin.diff"
for f in $(cd "$WORK/render-ns" && find . -type f ! -path '*/secrets/*' ! -path '*/authorized_keys/*' | sort); do
	sed -E -e "s/\b$NS_STACK\b/$STACK/g; s/${NS_PRIVATE_NET%.*}\./${PRIVATE_NET%.*}./g; s/${NS_PUBLIC_NET%.*}\./${PUBLIC_NET%.*}./g" \
		-e "s/${NS_HTTP_PUB##*:}/${HTTP_PUB##*:}/g; s/${NS_HTTPS_PUB##*:}/${HTTPS_PUB##*:}/g" "$WORK/render-ns/$f" >"$WORK/twin"
	diff -u --label "$NS_STACK/${f#./}" --label "$STACK/${f#./}" "$WORK/twin" "$WORK/render/$f" >>"$WORK/twin.diff" || (($? == 1)) || die "cannot compare $f"
done
[[ $(cd "$WORK/render" && find . -type f | sort) == "$(cd "$WORK/render-ns" && find . -type f | sort)" ]] ||
	die "bulkhead plan --render wrote different files for $STACK and $NS_STACK; bench/dataplane.sh needs updating"
[[ ! -s $WORK/twin.diff ]] || die "stack $NS_STACK does not render as $STACK does but for its name and addresses; bench/dataplane.sh needs updating:
$(cat "$WORK/twin.diff")"

log "bringing the split stack up"
UP_TRIED[$STACK]=$STACK_FILE
t0=$(date +%s.%N)
"$BH" up -f "$STACK_FILE" >&2 9>&- || die "bulkhead up failed"
split_up_s=$(since "$t0")
# bulkhead up installed the daemons the baseline runs too.
for c in runc mariadb-install-db mariadbd memcached php-fpm8.2 apache2; do
	command -v "$c" >/dev/null || die "$c not found after bulkhead up"
done

nosandbox_up_s=-
if ((want_ns)); then
	log "bringing the unsandboxed stack $NS_STACK up"
	UP_TRIED[$NS_STACK]=$NS_STACK_FILE
	t0=$(date +%s.%N)
	"$BH" up --unsafe-no-sandbox -f "$NS_STACK_FILE" >&2 9>&- || die "bulkhead up --unsafe-no-sandbox failed"
	nosandbox_up_s=$(since "$t0")
fi

# --- the monolithic baseline ------------------------------------------------
#
# bench/mono renders app-1's, db's and cache's configs with bulkhead's own
# renderer from the split's plan, every node on 127.0.0.1 and every path
# under $M, and the daemons' command lines as services.json has them. No
# rendered text is adapted; this still fails closed: a node path, a stack
# address or app-1's name in what it wrote means the renderer put one where
# neither the Layout nor the plan reaches, and the two sides would differ.

log "rendering the monolithic baseline's configs (bench/mono)"
(cd "$REPO" && go build -o "$WORK/bench-mono" ./bench/mono) || die "go build ./bench/mono failed"
"$WORK/bench-mono" -plan "$WORK/plan.json" -dir "$M" || die "bench/mono could not render the baseline"
priv_re=${PRIVATE_NET%.*}.
priv_re=${priv_re//./\\.}[0-9]{1,3} # 10\.240\.0\.[0-9]{1,3}
for f in "$M"/etc/*.conf "$M"/etc/my.cnf "$M"/etc/secrets/* "$M"/services/*.json; do
	bad=$(grep -nE "/(etc|run|srv|var/log|var/lib)/bulkhead|/srv/site|$priv_re|${PUBLIC_NET%.*}\.|\"app-1\"" "$f" || true)
	[[ -z $bad ]] || die "bench/mono's ${f#"$M"/} still names the split's paths, addresses or app-1; bench/mono needs updating:
$bad"
done
mkdir -p "$M"/{log,run/app/php-tmp,run/db,run/cache,mysql}
cp -a "$STACK_DIR/site" "$M/site"
chown -R www-data:www-data "$M/site/uploads"
chmod 1733 "$M/run/app/php-tmp"
chown mysql:mysql "$M/run/db" "$M/mysql"
# Who reads the secrets: php-fpm's workers the password, mariadbd its init file.
chgrp www-data "$M/etc/secrets/db_password"
chgrp mysql "$M/etc/secrets/mariadb-init.sql"

# apache2 serves the static files itself (FallbackResource only sends what
# is not a file to index.php), with the static node's caching header.
cat >>"$M/etc/apache2.conf" <<'EOF'

# Added by bench/dataplane.sh: the static node's caching header (lighttpd's
# expire.url), so the static responses match.
<LocationMatch "^/(assets|uploads)/">
    Header set Cache-Control "max-age=3600"
</LocationMatch>
EOF

# svc_cmd NODE SERVICE [argv|setup]: the command bench/mono wrote for a
# daemon of NODE (mono, db or cache), one word a line
svc_cmd() { jsonq "$M/services/$1.json" '[w for s in j if s["name"] == a[0] for w in (s.get(a[1]) or [])]' "$2" "${3:-argv}"; }

ip netns add "$MONO_NS"
ip -n "$MONO_NS" link set lo up
in_mono() { ip netns exec "$MONO_NS" "$@"; }

start_mono() { # NAME LOG CMD...: start in the background in the namespace and in cgroup $MONO_CG-NAME, record the PID
	local name=$1 logf=$2 cg=$MONO_CG-$1
	shift 2
	[[ -n ${1:-} ]] || die "mono: no command for $name; bench/dataplane.sh needs updating"
	mkdir "$cg" || die "mono: cannot make cgroup $cg"
	# sh joins the cgroup and execs ip, which execs the daemon: $! is the
	# daemon's PID, and every process it starts is in its cgroup. Joined
	# outside the namespace: ip netns exec mounts a /sys of its own, without
	# the cgroup file systems.
	sh -c 'echo $$ >"$0/cgroup.procs" && exec ip netns exec "$@"' "$cg" "$MONO_NS" "$@" >>"$logf" 2>&1 </dev/null 9>&- &
	MONO_PIDS+=("$!")
	MONO_NAMES+=("$name")
}
wait_ready() { # NAME PID SECONDS TEST...: poll TEST until it passes
	local name=$1 pid=$2 secs=$3 i
	shift 3
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		is_running "$pid" || { tail -n 20 "$M/log/$name.log" >&2; die "mono: $name exited before it was ready"; }
		sleep 0.1
	done
	tail -n 20 "$M/log/$name.log" >&2
	die "mono: $name not ready after ${secs}s"
}
tcp_open() { in_mono bash -c "exec 3<>/dev/tcp/$1/$2"; }

log "starting the monolithic baseline in netns $MONO_NS"
t0=$(date +%s.%N)
mapfile -t cmd < <(svc_cmd cache memcached)
start_mono memcached "$M/log/memcached.log" "${cmd[@]}"
wait_ready memcached "${MONO_PIDS[-1]}" 10 tcp_open 127.0.0.1 11211
mapfile -t cmd < <(svc_cmd db mariadb setup)
[[ ${cmd[0]:-} == mariadb-install-db ]] || die "mono: db's setup is not mariadb-install-db (${cmd[*]}); bench/dataplane.sh needs updating"
"${cmd[@]}" >"$M/log/mariadb-install-db.log" 2>&1 || { tail -n 20 "$M/log/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
mapfile -t cmd < <(svc_cmd db mariadb)
start_mono mariadb "$M/log/mariadb.log" "${cmd[@]}"
wait_ready mariadb "${MONO_PIDS[-1]}" 60 tcp_open 127.0.0.1 3306
mapfile -t cmd < <(svc_cmd mono php-fpm)
start_mono php-fpm "$M/log/php-fpm.log" "${cmd[@]}"
wait_ready php-fpm "${MONO_PIDS[-1]}" 20 test -S "$M/run/app/php-fpm.sock"
mapfile -t cmd < <(svc_cmd mono apache2)
start_mono apache2 "$M/log/apache2.log" "${cmd[@]}"
wait_ready apache2 "${MONO_PIDS[-1]}" 20 tcp_open 127.0.0.1 80
mono_up_s=$(since "$t0")

# --- targets ------------------------------------------------------------------

# edge_public STACK PLAN-JSON: the edge's public address. Fail closed: it must
# route into the stack's own bridge from the host, and the client namespace
# must be the stack's own.
edge_public() {
	local a
	a=$(node_addr "$2" edge public)
	[[ $a =~ ^[0-9.]+$ ]] || die "no public address for the edge in the plan of $1"
	ip -o route get "$a" 2>/dev/null | grep -q " dev $1-pub " || die "$a does not route into bridge $1-pub"
	[[ -e /run/netns/bh-$1-outside ]] || die "bulkhead up made no namespace bh-$1-outside"
	echo "$a"
}
edge_pub=$(edge_public "$STACK" "$WORK/plan.json")
ns_edge_pub=
((!want_ns)) || ns_edge_pub=$(edge_public "$NS_STACK" "$WORK/plan-ns.json")
in_outside() { ip netns exec "$OUTSIDE_NS" "$@"; }
in_ns_outside() { ip netns exec "$NS_OUTSIDE_NS" "$@"; }

# setup -> how to run a command next to its server, and its base URL
declare -A BASE RUNNER
BASE[split]=http://$edge_pub RUNNER[split]=in_outside
BASE[nosandbox]=http://$ns_edge_pub RUNNER[nosandbox]=in_ns_outside
BASE[mono]=http://127.0.0.1 RUNNER[mono]=in_mono
BASE[published]=http://$HTTP_PUB RUNNER[published]=
SETUPS=(split nosandbox mono published)
if [[ -n $only_setups ]]; then read -ra SETUPS <<<"$(subset "$only_setups" "${SETUPS[@]}")"; fi
# measured SETUP WORKLOAD: whether the rounds run SETUP on WORKLOAD
measured() {
	[[ " ${SETUPS[*]} " == *" $1 "* ]] || return 1
	case $1 in
	published) [[ " ${PUBLISHED_WORKLOADS[*]} " == *" $2 "* ]] ;;
	nosandbox) [[ " ${NOSANDBOX_WORKLOADS[*]} " == *" $2 "* ]] ;;
	*) true ;;
	esac
}

# sandbox_of STACK: how the edge's nginx master runs, from /proc: its
# seccomp mode (0 none, 2 filter) and its uid map. Fail closed: the split
# must run sandboxed and its twin not, or the ratio measures nothing.
sandbox_of() {
	local pid
	pid=$(runc ps "bh-$1-edge" | awk 'NR > 1 && index($0, "nginx: master") && !p {p = $2} END {print p}')
	[[ -n $pid ]] || die "no nginx master in bh-$1-edge"
	printf 'seccomp %s, uid_map %s\n' "$(awk '$1 == "Seccomp:" {print $2}' "/proc/$pid/status")" "$(awk '{print $1, $2, $3}' "/proc/$pid/uid_map")"
}
split_sandbox=$(sandbox_of "$STACK") ns_sandbox="seccomp 0, uid_map 0 0 4294967295"
((!want_ns)) || ns_sandbox=$(sandbox_of "$NS_STACK")
[[ $split_sandbox == "seccomp 2, uid_map 0 "* && $split_sandbox != *"uid_map 0 0 "* ]] ||
	die "stack $STACK does not run sandboxed: its edge's nginx has $split_sandbox"
[[ $ns_sandbox == "seccomp 0, uid_map 0 0 4294967295" ]] ||
	die "stack $NS_STACK, brought up with --unsafe-no-sandbox, runs sandboxed: its edge's nginx has $ns_sandbox"
runner() { local s=${1%%:*}; echo "${RUNNER[$s]}"; }
base() { local s=${1%%:*}; echo "${BASE[$s]}"; }

fetch() { # SETUP PATH [CURL ARGS...]: prints "code size x-cache"
	local s=$1 p=$2
	shift 2
	$(runner "$s") curl -sS -m 10 -o /dev/null -D "$WORK/headers" -w '%{http_code} %{size_download}' "$@" "$(base "$s")$p"
	awk 'tolower($1) == "x-cache:" {sub(/\r$/, "", $2); x = $2} END {print " " (x == "" ? "-" : x)}' "$WORK/headers"
}

wrk_cmd() { # SETUP WORKLOAD WRK-ARGS...: wrk next to SETUP's server
	local s=$1 w=$2
	shift 2
	local script=()
	[[ ${METHOD[$w]} != POST ]] || script=(-s "$WORK/post.lua")
	$(runner "$s") wrk "$@" "${script[@]}" "$(base "$s")${URLPATH[$w]}"
}

# A CSRF token of the benchmark's own: the site checks that the form's
# field equals the cookie, so wrk sends both.
CSRF=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$WORK/post.lua" <<EOF2
-- bench/dataplane.sh: POST /posts as a visitor's form does.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "csrf=$CSRF"
wrk.body = "csrf=$CSRF&title=Benchmark+post&body=Written+by+bench%2Fdataplane.sh+to+measure+a+write."
EOF2

# post_once SETUP: one post the way wrk makes them; the site answers 303.
post_once() {
	local code
	code=$($(runner "$1") curl -sS -m 10 -o /dev/null -w '%{http_code}' -b "csrf=$CSRF" \
		--data "csrf=$CSRF&title=Benchmark+post&body=Seeded+by+bench%2Fdataplane.sh." "$(base "$1")/posts") || die "$1: POST /posts failed"
	[[ $code == 303 ]] || die "$1: POST /posts answered $code, not 303"
}

log "seeding posts, checking every page"
# At least fifty posts on each side before anything is measured (a
# second of the post workload), so that / always lists the same 50 newest
# posts; the posts the runs add change none of that.
# On a busy host a second may make fewer: wrk posts again, up to 10 times.
for s in split nosandbox mono; do
	[[ $s != nosandbox ]] || ((want_ns)) || continue
	post_once "$s"
	seeded=0
	for ((i = 0; i < 10 && seeded < 50; i++)); do
		out=$(wrk_cmd "$s" post -t1 -c4 -d1s 2>&1) || die "$s: wrk could not post: $out"
		seeded=$((seeded + $(awk '/requests in/ {print $1}' <<<"$out")))
	done
	((seeded >= 50)) || die "$s: seeding made $seeded posts in 10 s, fewer than 50: $out"
done
log "checking every page on every setup"

declare -A SIZE
check_200() { # every GET workload answers 200 on every setup; POST 303
	local s w r
	for s in "${SETUPS[@]}"; do
		for w in "${WORKLOADS[@]}"; do
			if [[ ${METHOD[$w]} == POST ]]; then
				[[ $s == published ]] || post_once "$s"
				continue
			fi
			r=$(fetch "$s" "${URLPATH[$w]}") || die "$s: GET ${URLPATH[$w]} failed"
			read -r code size xcache <<<"$r"
			[[ $code == 200 ]] || die "$s: GET ${URLPATH[$w]} answered $code, not 200"
			[[ $w != miss || $xcache == miss ]] || die "$s: GET ${URLPATH[$w]} was not a cache miss (X-Cache: $xcache)"
			SIZE[$s:$w]=$size
		done
		# After the miss page, / comes from the cache.
		r=$(fetch "$s" /) && r=$(fetch "$s" /) || die "$s: GET / failed"
		[[ ${r##* } == hit ]] || die "$s: GET / twice in a row was not a cache hit (X-Cache: ${r##* })"
	done
}
check_200

# --- levers ---------------------------------------------------------------------
#
# A lever is set on the running split stack by editing a node's rendered
# config (under $NODES_DIR/NODE/conf, the node's /etc/bulkhead) and
# reloading the daemon, and set back the same way; the sets-100 lever adds
# elements to the nodes' nft sets. A lever that does not change the config,
# or a config the daemon rejects, fails the run.

declare -A PRISTINE
for f in edge/conf/nginx.conf app-1/conf/php-fpm.conf app-2/conf/php-fpm.conf app-1/conf/apache2.conf app-2/conf/apache2.conf; do
	[[ -s $NODES_DIR/$f ]] || die "no $NODES_DIR/$f; bench/dataplane.sh needs updating"
	cp "$NODES_DIR/$f" "$WORK/pristine-${f//\//_}"
	PRISTINE[$f]=$WORK/pristine-${f//\//_}
done
APP_NODES=(app-1 app-2)

# master_pid NODE PATTERN: the host PID of the node's daemon whose command
# matches PATTERN, from runc
master_pid() {
	# No early exit from awk: runc would die of SIGPIPE, and pipefail says so.
	runc ps "bh-$STACK-$1" | awk -v pat="$2" 'NR > 1 && index($0, pat) && !p {p = $2} END {print p}'
}
# edit_conf FILE SED-EXPR: FILE (relative to $NODES_DIR) becomes its
# pristine copy edited with SED-EXPR; fails when that changes nothing.
edit_conf() {
	local f=$1 expr=$2
	sed -E "$expr" "${PRISTINE[$f]}" >"$NODES_DIR/$f.new"
	! cmp -s "$NODES_DIR/$f.new" "${PRISTINE[$f]}" || die "lever: '$expr' changes nothing in $f; bench/dataplane.sh needs updating"
	cat "$NODES_DIR/$f.new" >"$NODES_DIR/$f" # same inode: the file is bind-mounted
	rm -f "$NODES_DIR/$f.new"
}
restore_conf() { cat "${PRISTINE[$1]}" >"$NODES_DIR/$1"; }
reload_edge() {
	local out pid
	out=$("$BH" exec edge --stack "$STACK" -- nginx -t -c /etc/bulkhead/nginx.conf 2>&1) || die "edge nginx rejects the lever's config: $out"
	pid=$(master_pid edge "nginx: master") && [[ -n $pid ]] || die "no nginx master in bh-$STACK-edge"
	kill -HUP "$pid"
	sleep 1
}
reload_fpm() {
	local n pid
	for n in "${APP_NODES[@]}"; do
		pid=$(master_pid "$n" "php-fpm: master") && [[ -n $pid ]] || die "no php-fpm master in bh-$STACK-$n"
		kill -USR2 "$pid"
	done
	sleep 1
}
# reload_apache: a graceful restart of both app nodes' apache2, which
# checks the config first (a config it rejects keeps the old one running,
# and check_200 at the end catches a node that stopped answering).
reload_apache() {
	local n pid out
	for n in "${APP_NODES[@]}"; do
		out=$("$BH" exec "$n" --stack "$STACK" -- apache2 -t -f /etc/bulkhead/apache2.conf 2>&1) || die "$n apache2 rejects the lever's config: $out"
		pid=$(master_pid "$n" "apache2 -f") && [[ -n $pid ]] || die "no apache2 in bh-$STACK-$n"
		kill -USR1 "$pid"
	done
	sleep 1
}
apache_edit() { local n; for n in "${APP_NODES[@]}"; do edit_conf "$n/conf/apache2.conf" "$1"; done; reload_apache; }
apache_restore() { local n; for n in "${APP_NODES[@]}"; do restore_conf "$n/conf/apache2.conf"; done; reload_apache; }
fpm_edit() { local n; for n in "${APP_NODES[@]}"; do edit_conf "$n/conf/php-fpm.conf" "$1"; done; reload_fpm; }
fpm_restore() { local n; for n in "${APP_NODES[@]}"; do restore_conf "$n/conf/php-fpm.conf"; done; reload_fpm; }

# Sets: which sets of which namespace hold the app pool's addresses, and
# the addresses the pool would have at 100 app nodes, both from the plans:
# this stack's, and the same stack's with 100 app nodes, whose app-3 ..
# app-100 are the addresses added. Fail closed: the larger plan must keep
# the pool's addresses where they are.
mapfile -t POOL < <(jsonq "$WORK/plan.json" '[i["addr"] for n in j["nodes"] if n["role"] == "app" for i in n["interfaces"] if i["network"] == "private"]')
((${#POOL[@]} == 2)) || die "the plan has ${#POOL[@]} app nodes, not the default stack's 2; bench/dataplane.sh needs updating"
mkdir -p "$WORK/stack100"
{
	# The stack file but its tiers, which come last.
	sed '/^tiers:$/,$d' "$STACK_FILE"
	cat <<EOF2
# Added by bench/dataplane.sh: the same stack at 100 app nodes, planned only.
site:
  dir: $STACK_DIR/site
tiers:
  edge: {}
  static: {}
  cache: {}
  db: {}
  storage: {}
  app:
    replicas: 100
EOF2
} >"$WORK/stack100/bulkhead.yaml"
plan_json "$WORK/stack100/bulkhead.yaml" "$WORK/plan100.json"
mapfile -t pool100 < <(jsonq "$WORK/plan100.json" '[i["addr"] for n in j["nodes"] if n["role"] == "app" for i in n["interfaces"] if i["network"] == "private"]')
((${#pool100[@]} == 100)) && [[ ${pool100[*]:0:2} == "${POOL[*]}" ]] ||
	die "at 100 app nodes the plan does not keep app-1 and app-2 at ${POOL[*]} (it has ${#pool100[@]} app nodes from ${pool100[*]:0:2}); bench/dataplane.sh needs updating"
EXTRA_ADDRS=$(IFS=,; echo "${pool100[*]:2}")
mapfile -t SETS < <(jsonq "$WORK/plan.json" '[n["netns"] + " " + s["name"] for n in j["nodes"] for s in n.get("firewall", {}).get("sets", []) if sorted(s["addrs"]) == sorted(a)]' "${POOL[@]}") # "netns set"
((${#SETS[@]} >= 1)) || die "no node's nft set holds the app pool (${POOL[*]}) in the plan; bench/dataplane.sh needs updating"
set_elements() { # add|delete
	local e ns set
	for e in "${SETS[@]}"; do
		read -r ns set <<<"$e"
		ip netns exec "$ns" nft "$1" element inet bulkhead "$set" "{ $EXTRA_ADDRS }" || die "nft $1 element in $ns $set failed"
	done
	for e in "${SETS[@]}"; do
		read -r ns set <<<"$e"
		local count
		count=$(ip netns exec "$ns" nft -j list set inet bulkhead "$set" | grep -o '"elem"[^]]*]' | grep -o '"[0-9.]*"' | wc -l)
		[[ $1 == delete && $count == "${#POOL[@]}" || $1 == add && $count == 100 ]] || die "set $set in $ns holds $count addresses after nft $1"
	done
}

# lever_default NAME: on or off, read from the rendered configs
lever_default() {
	local e=${PRISTINE[edge/conf/nginx.conf]} a=${PRISTINE[app-1/conf/php-fpm.conf]}
	case $1 in
	keepalive) grep -qE '^\s+keepalive [0-9]+;' "$e" && echo on || echo off ;;
	microcache) grep -qE '^\s+proxy_cache static;' "$e" && echo on || echo off ;;
	fpm-static) grep -qE '^pm = static' "$a" && echo on || echo off ;;
	fpm-recycle) grep -qE '^pm.max_requests = 10000$' "$a" && echo on || echo off ;;
	opcache) grep -qE '^php_admin_flag\[opcache.validate_timestamps\] = off$' "$a" && echo on || echo off ;;
	sets-100) echo off ;; # the default stack has 2 app nodes
	edge-workers) grep -qE '^worker_processes 1;' "$e" && echo on || echo off ;;
	edge-buffers) grep -qE '^\s+proxy_buffers [0-9]+ 16k;' "$e" && echo on || echo off ;;
	app-buffer) grep -qE '^\s+SetOutputFilter BUFFER$' "${PRISTINE[app-1/conf/apache2.conf]}" && echo on || echo off ;;
	edge-pcre-jit) grep -qE '^pcre_jit on;' "$e" && echo on || echo off ;;
	edge-log) grep -qE '^\s+access_log off;' "$e" && echo off || echo on ;;
	fpm-children) grep -qE '^pm.max_children = 3$' "$a" && echo on || echo off ;;
	esac
}
# lever_set NAME STATE: set the lever on the running stack; lever_reset
# NAME: back to the rendered configs
lever_set() {
	case $1:$2 in
	keepalive:off) edit_conf edge/conf/nginx.conf '/^\s+keepalive [0-9]+;$/d'; reload_edge ;;
	microcache:off) edit_conf edge/conf/nginx.conf '/^\s+proxy_cache static;$/d'; reload_edge ;;
	fpm-static:on) fpm_edit 's/^pm = dynamic$/pm = static/' ;;
	fpm-static:off) fpm_edit 's/^pm = static$/pm = dynamic/' ;;
	fpm-recycle:on) fpm_edit 's/^pm.max_requests = .*/pm.max_requests = 10000/' ;;
	fpm-recycle:off) fpm_edit 's/^pm.max_requests = .*/pm.max_requests = 500/' ;;
	opcache:off) fpm_edit '/^php_admin_flag\[opcache.validate_timestamps\] = off$/d' ;;
	opcache:on) fpm_edit 's/^(php_admin_flag\[log_errors\] = on)$/\1\nphp_admin_flag[opcache.validate_timestamps] = off/' ;;
	sets-100:on) set_elements add ;;
	edge-workers:on) edit_conf edge/conf/nginx.conf 's/^worker_processes auto;$/worker_processes 1;/'; reload_edge ;;
	edge-workers:off) edit_conf edge/conf/nginx.conf 's/^worker_processes 1;$/worker_processes auto;/'; reload_edge ;;
	edge-buffers:on) edit_conf edge/conf/nginx.conf 's/^(\s+proxy_read_timeout [0-9]+s;)$/\1\n\tproxy_buffer_size 16k;\n\tproxy_buffers 8 16k;/'; reload_edge ;;
	edge-buffers:off) edit_conf edge/conf/nginx.conf '/^\s+proxy_buffer(s 8|_size) 16k;$/d'; reload_edge ;;
	app-buffer:on) apache_edit 's/^(\s+)(SetHandler "proxy:unix:.*)$/\1\2\n\1SetOutputFilter BUFFER\n\1BufferSize 65536/' ;;
	app-buffer:off) apache_edit '/^\s+(SetOutputFilter BUFFER|BufferSize [0-9]+)$/d' ;;
	edge-pcre-jit:on) edit_conf edge/conf/nginx.conf 's/^(worker_rlimit_nofile [0-9]+;)$/\1\npcre_jit on;/'; reload_edge ;;
	edge-pcre-jit:off) edit_conf edge/conf/nginx.conf '/^pcre_jit on;$/d'; reload_edge ;;
	edge-log:off) edit_conf edge/conf/nginx.conf 's/^(\s+access_log) .*;$/\1 off;/'; reload_edge ;;
	fpm-children:on) fpm_edit 's/^pm.max_children = .*/pm.max_children = 3/' ;;
	fpm-children:off) fpm_edit 's/^pm.max_children = 3$/pm.max_children = 6/' ;;
	*) die "lever $1 cannot be set $2" ;;
	esac
}
lever_reset() {
	case $1 in
	keepalive | microcache | edge-*) restore_conf edge/conf/nginx.conf; reload_edge ;;
	fpm-* | opcache) fpm_restore ;;
	app-buffer) apache_restore ;;
	sets-100) set_elements delete ;;
	esac
}
declare -A LEVER_DEFAULT LEVER_TOGGLED
for l in "${LEVERS[@]}"; do
	LEVER_DEFAULT[$l]=$(lever_default "$l")
	LEVER_TOGGLED[$l]=$([[ ${LEVER_DEFAULT[$l]} == on ]] && echo off || echo on)
done

# --- CPU accounting -------------------------------------------------------------
#
# Per-process CPU time from /proc, before and after each run, attributed to
# the node whose network namespace the process is in (sshfs, the host-side
# FUSE client, is counted apart), to the supervisor, or for mono to the
# daemon. Children that came and went are counted through their parent's
# cutime/cstime. wrk's own time comes from the shell's children times.
# The unsandboxed stack's groups carry its name (benchns:edge,
# benchns:supervise), so that the idle stack's share shows apart.

declare -A NSLABEL
for n in $(ip netns list | awk '{print $1}'); do
	case $n in
	"bh-$STACK-"*) NSLABEL[$(stat -L -c %i "/run/netns/$n")]=${n#"bh-$STACK-"} ;;
	"bh-$NS_STACK-"*) NSLABEL[$(stat -L -c %i "/run/netns/$n")]=$NS_STACK:${n#"bh-$NS_STACK-"} ;;
	"$MONO_NS") NSLABEL[$(stat -L -c %i "/run/netns/$n")]=mono ;;
	esac
done
# supervise_pid STACK: its `bulkhead supervise`. One ps, not a tr per
# process: the host may run a thousand.
supervise_pid() { ps -eo pid=,args= | awk -v pat=" supervise --stack $1 " 'index($0 " ", pat) && !p {p = $1} END {print p}'; }
sup_pid=$(supervise_pid "$STACK") ns_sup_pid=$(supervise_pid "$NS_STACK")
[[ -n $sup_pid ]] || log "warning: no 'bulkhead supervise --stack $STACK' process found; its CPU is not counted"
[[ -n $ns_sup_pid ]] || ((!want_ns)) || log "warning: no 'bulkhead supervise --stack $NS_STACK' process found; its CPU is not counted"
nsmap=$WORK/nsmap
for k in "${!NSLABEL[@]}"; do echo "ns $k ${NSLABEL[$k]}"; done >"$nsmap"
[[ -z $sup_pid ]] || echo "pid $sup_pid supervise supervise:children" >>"$nsmap"
[[ -z $ns_sup_pid ]] || echo "pid $ns_sup_pid $NS_STACK:supervise $NS_STACK:supervise:children" >>"$nsmap"

cpu_snap() { # FILE: "pid label ticks" for every process of ours, then "host busy total"
	{
		# Processes come and go while these run: their errors mean nothing.
		stat -c '%n %N' /proc/[0-9]*/ns/net 2>/dev/null | awk '{print "nsof", $1, $NF}' || true
		cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^/stat /' || true
	} | awk -v mapf="$nsmap" '
		BEGIN { while ((getline l < mapf) > 0) { split(l, a, " "); if (a[1] == "ns") ns[a[2]] = a[3]; else { pidl[a[2]] = a[3]; kidl[a[2]] = a[4] } } }
		$1 == "nsof" { if ($NF !~ /net:\[/) next; split($2, p, "/"); ino = $NF; gsub(/[^0-9]/, "", ino); nsof[p[3]] = ino; next }
		$1 == "stat" {
			pid = $2; line = substr($0, 6)
			comm = line; sub(/^[0-9]+ \(/, "", comm); sub(/\) [^)]*$/, "", comm)
			rest = line; sub(/^.*\) /, "", rest); n = split(rest, f, " ")
			t = f[12] + f[13] + f[14] + f[15]
			if (pid in pidl) {
				# The supervisor: its own threads (its once-a-second
				# repair loop: the kernel publishes the ports), apart from the children it
				# reaps (runc).
				print pid, pidl[pid], f[12] + f[13]
				print pid "c", kidl[pid], f[14] + f[15]
				next
			} else if ((pid in nsof) && (nsof[pid] in ns)) {
				label = ns[nsof[pid]]
				if (label == "mono") label = "mono:" comm
				else if (comm == "sshfs" || comm == "ssh") label = label ":sshfs"
			} else next
			print pid, label, t
		}'
	awk '$1 == "cpu" {busy = 0; tot = 0; for (i = 2; i <= NF; i++) {tot += $i; if (i != 5 && i != 6) busy += $i}; print "host", busy, tot}' /proc/stat
}
# children_cpu FILE: the CPU seconds of the shell's reaped children, from the
# output of `times` (which must run in this shell: a subshell's are zero).
children_cpu() { awk 'NR == 2 {s = 0; for (i = 1; i <= 2; i++) {split($i, a, "m"); s += a[1] * 60 + a[2]} printf "%.2f", s}' "$1"; }

# Cgroups: every node's container cgroup (runc makes one per container),
# found from its init process, and the mono daemons' own ones. cg_snap
# prints "label usage_us user_us sys_us" for each, and the host's softirq
# and irq time from /proc/stat (where the kernel's network receive path
# mostly runs, whoever it works for).
declare -A CGDIR
# cgroup_dir PID: the directory of PID's cgroup in $CG_ROOT
cgroup_dir() {
	local rel
	if [[ $CG_ROOT == */cpuacct ]]; then
		rel=$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' "/proc/$1/cgroup")
	else
		rel=$(awk -F: '$1 == "0" {print $3}' "/proc/$1/cgroup")
	fi
	[[ -n $rel && -d $CG_ROOT$rel ]] || die "no cgroup in $CG_ROOT for pid $1"
	echo "$CG_ROOT${rel%/}"
}
for st in "$STACK" "$NS_STACK"; do
	prefix=
	[[ $st == "$STACK" ]] || prefix=$st:
	while read -r id pid; do
		CGDIR[$prefix${id#"bh-$st-"}]=$(cgroup_dir "$pid")
	done < <(runc list -f json | jsonq /dev/stdin '[c["id"] + " " + str(c["pid"]) for c in j if c["id"].startswith("bh-" + a[0] + "-") and c["status"] == "running"]' "$st")
done
for d in "$MONO_CG"-*; do
	CGDIR[mono:${d##*/bhbench-mono-}]=$d
done
for k in "${!CGDIR[@]}"; do
	# One cgroup per group, or the deltas would count twice.
	[[ ${CGDIR[$k]} != "$CG_ROOT" ]] || die "$k runs in the root cgroup; its CPU cannot be told apart"
done
((${#CGDIR[@]} >= 7 * (1 + want_ns) + 4)) || die "found only ${#CGDIR[@]} cgroups (${!CGDIR[*]}); want 7 nodes for each stack and 4 mono daemons"
hz_us=$((1000000 / $(getconf CLK_TCK)))
cgmap=$WORK/cgmap
for k in "${!CGDIR[@]}"; do echo "$k ${CGDIR[$k]}"; done >"$cgmap"
# One process reads them all, so that every group's interval is wrk's run
# and little more, however busy the host.
cg_snap() {
	awk -v hz="$hz_us" '
		function field(file, name,   l, f, v) {
			v = 0
			while ((getline l < file) > 0) { split(l, f, " "); if (f[1] == name) v = f[2] }
			close(file)
			return v
		}
		{
			k = $1; d = $2
			if ((getline u < (d "/cpuacct.usage")) > 0) {
				close(d "/cpuacct.usage")
				printf "%s %.0f %.0f %.0f\n", k, u / 1000, field(d "/cpuacct.stat", "user") * hz, field(d "/cpuacct.stat", "system") * hz
			} else {
				f = d "/cpu.stat"
				print k, field(f, "usage_usec"), field(f, "user_usec"), field(f, "system_usec")
			}
		}
		END {
			while ((getline l < "/proc/stat") > 0) {
				n = split(l, c, " ")
				if (c[1] != "cpu") continue
				b = 0; for (i = 2; i <= n; i++) if (i != 5 && i != 6) b += c[i]
				print "host:softirq", (c[7] + c[8]) * hz, 0, (c[7] + c[8]) * hz
				print "host:busy", b * hz, 0, 0
			}
		}' "$cgmap"
}
CGROWS=$data/dataplane-cgroups.tsv
printf 'round\tsetup\tworkload\trequests\tgroup\tusage_us\tuser_us\tsys_us\n' >"$CGROWS"

# cpu_report BEFORE AFTER WRK_CPU_SECONDS: "label pct, ..." in % of one core
# over the time between the snapshots (from /proc/stat), largest first; then
# host busy and what the host spent elsewhere.
hz=$(getconf CLK_TCK)
cpu_report() {
	awk -v hz="$hz" -v wrk="$3" -v ncpu="$(nproc)" '
		FNR == 1 { file++ }
		$1 == "host" { hb[file] = $2; ht[file] = $3; next }
		file == 1 { t1[$1] = $3; l1[$1] = $2; next }
		{ d = $3 - (($1 in t1) ? t1[$1] : 0); use[$2] += d; seen[$1] = 1 }
		END {
			secs = (ht[2] - ht[1]) / ncpu / hz
			if (secs <= 0) { print "- | - | -"; exit }
			for (p in t1) if (!(p in seen)) use[l1[p]] -= t1[p]
			use["wrk"] = wrk * hz
			out = ""; ours = 0
			while (1) {
				best = ""; for (k in use) if (best == "" || use[k] > use[best]) best = k
				if (best == "") break
				pct = 100 * use[best] / hz / secs; ours += pct
				if (pct >= 1) out = out (out == "" ? "" : ", ") best " " sprintf("%.0f", pct)
				delete use[best]
			}
			host = 100 * (hb[2] - hb[1]) / hz / secs
			printf "%s | %.0f of %d | %.0f\n", out, host, 100 * ncpu, host - ours
		}' "$1" "$2"
}

# --- running wrk --------------------------------------------------------------

RESULTS=$data/dataplane.tsv
printf 'round\tsetup\tworkload\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\tstatus\tcpu\n' >"$RESULTS"
bad_runs=0

# diagnose ROUND SETUP WORKLOAD: right after a run with errors, what the
# server answers now and what its logs say, for the results.
DIAG=$data/dataplane-diagnostics.md
rm -f "$DIAG"
diagnose() {
	local r=$1 s=$2 w=$3 p=${URLPATH[$3]} i
	{
		printf '\n### round %s, %s, %s (`%s %s`)\n\n' "$r" "$s" "$w" "${METHOD[$w]}" "$p"
		printf 'Status codes of 20 GET requests made right after the run (code, served by: count):\n\n```\n'
		for ((i = 0; i < 20; i++)); do
			$(runner "$s") curl -sS -m 5 -o /dev/null -D - "$(base "$s")$p" 2>&1 |
				awk 'NR == 1 {c = $2} tolower($1) == "x-served-by:" {b = $2} END {sub(/\r$/, "", b); print (c == "" ? "no answer" : c) ", " (b == "" ? "-" : b)}'
		done | sort | uniq -c
		printf '```\n'
		if [[ $s == mono ]]; then
			printf '\nLast lines of the baseline'"'"'s error logs:\n\n```\n'
			tail -n 15 "$M/log/apache2-error.log" "$M/log/php-fpm.log" 2>&1
			printf '```\n'
		else
			local n sf=$STACK_FILE
			[[ $s != nosandbox ]] || sf=$NS_STACK_FILE
			printf '\n`bulkhead status`, and the last log lines (access logs left out) of the edge, static and app nodes:\n\n```\n'
			"$BH" status -f "$sf" 2>&1
			for n in edge static app-1 app-2; do
				echo "-- $n"
				"$BH" logs "$n" -n 200 --file "$sf" 2>&1 | grep -vE '^[a-z0-9-]*access: ' | tail -n 12
			done
			printf '```\n'
		fi
	} >>"$DIAG"
}

to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; printf "%.2f", n }'; }

run_wrk() { # ROUND SETUP WORKLOAD
	local r=$1 s=$2 w=$3 f=$WORK/wrk-$1-${2//[:=]/_}-$3.txt snap1=$WORK/cpu1 snap2=$WORK/cpu2
	local c0 c1 rc=0 rps p50 p99 non2xx sock reqs wrkcpu cpu status=ok
	if ((warm_each)); then
		wrk_cmd "$s" "$w" -t"$threads" -c"$conns" -d"${warm_each}s" >/dev/null 2>&1 || true
	fi
	cpu_snap >"$snap1"
	cg_snap >"$WORK/cg1"
	times >"$WORK/times0"
	wrk_cmd "$s" "$w" "${WRK_ARGS[@]}" >"$f" 2>&1 || rc=$?
	times >"$WORK/times1"
	cg_snap >"$WORK/cg2"
	c0=$(children_cpu "$WORK/times0")
	c1=$(children_cpu "$WORK/times1")
	cpu_snap >"$snap2"
	wrkcpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.2f", b - a}')
	cpu=$(cpu_report "$snap1" "$snap2" "$wrkcpu")
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
	p50=$(awk '$1 == "50%" {print $2}' "$f")
	p99=$(awk '$1 == "99%" {print $2}' "$f")
	reqs=$(awk '/requests in/ {print $1}' "$f")
	non2xx=$(awk -F': ' '/^ *Non-2xx or 3xx responses:/ {print $2 + 0}' "$f")
	sock=$(awk '/Socket errors:/ {gsub(/,/, ""); print "connect " $4 ", read " $6 ", write " $8 ", timeout " $10}' "$f")
	: "${non2xx:=0}"
	if ((rc != 0)) || [[ -z $rps || -z $p50 || -z $p99 || -z $reqs || $reqs == 0 ]]; then
		echo "dataplane.sh: wrk failed (exit $rc) on $s $w:" >&2
		cat "$f" >&2
		bad_runs=$((bad_runs + 1))
		printf '%s\t%s\t%s\t-\t-\t-\t-\t-\t0\twrk failed (exit %s)\t%s\n' "$r" "$s" "$w" "$rc" "$cpu" >>"$RESULTS"
		diagnose "$r" "$s" "$w"
		return
	fi
	if ((non2xx > 0)) || [[ -n $sock ]]; then
		bad_runs=$((bad_runs + 1))
		status=errors
		diagnose "$r" "$s" "$w"
	fi
	p50=$(to_ms "$p50") p99=$(to_ms "$p99")
	awk -v pre="$r\t$s\t$w\t$reqs" 'NR == FNR {u[$1] = $2; us[$1] = $3; sy[$1] = $4; next}
		($1 in u) {printf "%s\t%s\t%d\t%d\t%d\n", pre, $1, $2 - u[$1], $3 - us[$1], $4 - sy[$1]}' "$WORK/cg1" "$WORK/cg2" >>"$CGROWS"
	printf '%s\t%s\t%s\t%s\twrk\t%.0f\t-\t-\n' "$r" "$s" "$w" "$reqs" "$(awk -v c="$wrkcpu" 'BEGIN {print c * 1000000}')" >>"$CGROWS"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$w" "$rps" "$p50" "$p99" \
		"$non2xx" "${sock:-0}" "$reqs" "$status" "$cpu" >>"$RESULTS"
	printf '   %-26s %-7s %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx/3xx %s  socket errors %s\n' \
		"$s" "$w" "$rps" "$p50" "$p99" "$non2xx" "${sock:-0}" >&2
}

((warm_first == 0)) || log "warming up (${warm_first}s per setup and workload)"
((warm_first == 0)) || for s in "${SETUPS[@]}"; do
	for w in "${WORKLOADS[@]}"; do
		measured "$s" "$w" || continue
		wrk_cmd "$s" "$w" -t"$threads" -c"$conns" -d"${warm_first}s" >/dev/null 2>&1 || die "$s: wrk could not run against ${URLPATH[$w]}"
	done
done

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= rounds; r++)); do
	log "round $r of $rounds: wrk ${WRK_ARGS[*]}"
	for w in "${WORKLOADS[@]}"; do
		# Alternate who goes first, so neither side always follows the
		# other; nosandbox runs right next to split, before it or after.
		if ((r % 2)); then order=(split nosandbox mono); else order=(mono nosandbox split); fi
		for s in "${order[@]}" published; do
			if measured "$s" "$w"; then run_wrk "$r" "$s" "$w"; fi
		done
	done
	for l in "${LEVERS[@]}"; do
		lever_set "$l" "${LEVER_TOGGLED[$l]}"
		for w in ${LEVER_WORKLOADS[$l]}; do
			run_wrk "$r" "split:$l=${LEVER_TOGGLED[$l]}" "$w"
		done
		lever_reset "$l"
	done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
check_200 # still answering after the load, with every lever set back

# --- what the report needs besides the runs -----------------------------------

ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
pool=$(grep -E '^pm(\.[a-z_]+)? *=' "$M/etc/php-fpm.conf" | sed -E 's/ *= */=/' | paste -sd' ' -)
mpm=$(grep -E '^(ThreadsPerChild|MaxRequestWorkers|ServerLimit) ' "$M/etc/apache2.conf" | paste -sd' ' -)
{
	printf 'key\tvalue\n'
	printf 'wrk\twrk %s\n' "${WRK_ARGS[*]}"
	printf 'rounds\t%s\n' "$rounds"
	printf 'duration_s\t%s\n' "$duration"
	printf 'warm_each_s\t%s\n' "$warm_each"
	printf 'warm_first_s\t%s\n' "$warm_first"
	printf 'load_start\t%s\n' "$load_start"
	printf 'load_end\t%s\n' "$load_end"
	printf 'split_up_s\t%s\n' "$split_up_s"
	printf 'nosandbox_up_s\t%s\n' "$nosandbox_up_s"
	printf 'mono_up_s\t%s\n' "$mono_up_s"
	printf 'edge_public\t%s\n' "$edge_pub"
	printf 'client_netns\t%s\n' "$OUTSIDE_NS"
	printf 'nosandbox_stack\t%s\n' "$( ((!want_ns)) || echo "$NS_STACK")"
	printf 'nosandbox_edge_public\t%s\n' "$ns_edge_pub"
	printf 'nosandbox_client_netns\t%s\n' "$NS_OUTSIDE_NS"
	printf 'nosandbox_workloads\t%s\n' "${NOSANDBOX_WORKLOADS[*]}"
	printf 'sandbox.split\t%s\n' "$split_sandbox"
	printf 'sandbox.nosandbox\t%s\n' "$ns_sandbox"
	printf 'published\t%s\n' "$HTTP_PUB"
	printf 'php_fpm_pool\t%s\n' "$pool"
	printf 'apache_mpm\t%s\n' "$mpm"
	printf 'sets_grown\t%s\n' "$(printf '%s; ' "${SETS[@]}" | sed 's/; $//')"
	for w in "${WORKLOADS[@]}"; do
		printf 'workload.%s\t%s %s\n' "$w" "${METHOD[$w]}" "${URLPATH[$w]}"
		for s in split nosandbox mono; do
			[[ ${METHOD[$w]} == POST ]] || printf 'bytes.%s.%s\t%s\n' "$s" "$w" "${SIZE[$s:$w]:-}"
		done
	done
	for l in "${LEVERS[@]}"; do
		printf 'lever.%s\t%s\n' "$l" "${LEVER_DOC[$l]}"
		printf 'lever.%s.default\t%s\n' "$l" "${LEVER_DEFAULT[$l]}"
		printf 'lever.%s.workloads\t%s\n' "$l" "${LEVER_WORKLOADS[$l]}"
	done
	for p in nginx lighttpd apache2 php8.2-fpm mariadb-server memcached wrk; do
		printf 'version.%s\t%s\n' "$p" "$(ver "$p")"
	done
	printf 'elapsed_s\t%s\n' "$(($(date +%s) - started))"
} >"$data/dataplane-meta.tsv"

if ((bad_runs)); then
	die "$bad_runs wrk run(s) had errors or failed; see $DIAG"
fi
log "dataplane done in $(($(date +%s) - started))s; raw results in $data"
