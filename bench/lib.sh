# bench/lib.sh: the shell that bench/dataplane.sh, bench/controlplane.sh,
# bench/change.sh and bench/backup.sh share; each sources it right after
# `set -euo pipefail`. Not a script of its own.
#
# Before sourcing, the caller sets
#   me       its name in messages (dataplane.sh)
#   started  $(date +%s) when it began, for log's clock
# and after it, BH (the bulkhead binary) before it calls remove_stale_stack.
#
# Every helper touches only what the benchmark itself made: a stack, a lock
# or a process it names by PID. Nothing here stops processes by name.

log() { printf '== [%3ds] %s\n' "$(($(date +%s) - started))" "$*" >&2; }
die() { printf '%s: %s\n' "$me" "$*" >&2; exit 1; }

# since T0 [DECIMALS]: seconds from T0 (a `date +%s.%N`) to now
since() { awk -v a="$1" -v b="$(date +%s.%N)" -v d="${2:-1}" 'BEGIN {printf "%." d "f", b - a}'; }

# settle [IDLE] [MAX]: wait until the host's CPUs were at least IDLE percent
# idle (90 by default) over one second, for at most MAX seconds (60), so
# that a timed command does not pay for what the previous one left running
# (the daemons of 100 new nodes settling, the kernel's memory monitor).
# Prints the seconds waited, and the idle percent of the last second; a
# host that never settles is timed anyway, and the figure says so.
settle() {
	local want=${1:-90} max=${2:-60} t0 a b idle=0
	t0=$(date +%s.%N)
	while :; do
		a=$(head -1 /proc/stat)
		sleep 1
		b=$(head -1 /proc/stat)
		idle=$(awk -v a="$a" -v b="$b" 'BEGIN {
			n = split(a, x, " "); split(b, y, " "); tot = 0
			for (i = 2; i <= n; i++) tot += y[i] - x[i]
			printf "%d", tot ? 100 * (y[5] - x[5] + y[6] - x[6]) / tot : 100 }')
		((idle >= want)) && break
		awk -v t="$(since "$t0" 0)" -v m="$max" 'BEGIN {exit !(t >= m)}' && break
	done
	printf '%s\t%s\n' "$(since "$t0" 1)" "$idle"
}

# take_lock NAME: one run of bench/NAME.sh at a time on this host, whichever
# checkout it comes from: the stack names, namespaces and ports are fixed.
# Sets LOCK, and have_lock=1 once held. The lock is fd 9: children that
# outlive a command (bulkhead supervise and its sshfs mounts, daemons) must
# be started with 9>&-, or after a killed run they would hold the lock and
# the next run could not remove what they belong to.
take_lock() {
	LOCK=/run/lock/bhbench-$1.lock
	mkdir -p /run/lock
	exec 9>>"$LOCK"
	flock -n 9 || die "another bench/$1.sh is running on this host (it holds $LOCK)"
	have_lock=1
}

# remove_stale_stack STACK: a stack of this benchmark's, left by an earlier
# run that was killed, is removed before anything starts.
remove_stale_stack() {
	[[ -e /var/lib/bulkhead/$1 ]] || return 0
	log "removing stack $1 left by an earlier run"
	"$BH" down --purge --stack "$1" >&2 || die "could not remove the stale stack $1"
}

# purge_stack STACK FILE: bulkhead down --purge, if the stack is there;
# fails when down does.
purge_stack() {
	[[ -e /var/lib/bulkhead/$1 ]] || return 0
	log "bulkhead down --purge (stack $1)"
	"$BH" down --purge -f "$2" >&2 || { echo "$me: bulkhead down failed (stack $1)" >&2; return 1; }
}

# write_stack FILE N: the default stack with N app nodes under the
# benchmark's own name ($STACK), subnets ($PRIVATE_NET, $PUBLIC_NET) and
# ports ($HTTP_PUB, $HTTPS_PUB). With $APP_DISK set, the app tier's disk
# is that size rather than the default.
write_stack() {
	cat >"$1" <<EOF
# Written by bench/$me: the default stack with $2 app nodes, under the
# benchmark's own name, subnets and ports.
name: $STACK
networks:
  private: $PRIVATE_NET
  public: $PUBLIC_NET
publish:
  http: $HTTP_PUB
  https: $HTTPS_PUB
tiers:
  edge: {}
  static: {}
  cache: {}
  db: {}
  storage: {}
  app:
    replicas: $2${APP_DISK:+
    disk: $APP_DISK}
EOF
}

# ports_free HOST:PORT...: dies when something listens on one of the ports.
ports_free() {
	local hp
	for hp in "$@"; do
		if ss -Hltn "sport = :${hp##*:}" | grep -q .; then
			die "port ${hp##*:} is taken on this host: $(ss -Hltnp "sport = :${hp##*:}")"
		fi
	done
}

# stack_leftovers STACK: prints what a stack left on the host, one object a
# line; nothing once `bulkhead down --purge` has done its work.
stack_leftovers() {
	local st=$1
	ip netns list 2>/dev/null | awk -v s="bh-$st-" 'index($1, s) == 1 {print "netns " $1}'
	runc list 2>/dev/null | awk -v s="bh-$st-" 'index($1, s) == 1 {print "container " $1}'
	ip -o link show 2>/dev/null | awk -F': ' -v s="$st-" '{sub(/@.*/, "", $2)} index($2, s) == 1 {print "link " $2}'
	nft list tables 2>/dev/null | awk -v t="bulkhead_$st" '$3 == t {print "nft table " $3}'
	awk -v s="/var/lib/bulkhead/$st/" 'index($2, s) == 1 {print "mount " $2}' /proc/mounts
	[[ ! -e /var/lib/bulkhead/$st ]] || echo "directory /var/lib/bulkhead/$st"
}

# release_stack: what a benchmark with one stack does when it ends, if it
# holds its lock: $STACK purged (if an up was tried), nothing of it left
# behind, the lock file removed. Fails, saying what was left, otherwise.
release_stack() {
	local rc=0 left
	((have_lock)) || return 0
	if ((tried)); then
		purge_stack "$STACK" "$STACK_FILE" || rc=1
	fi
	left=$(stack_leftovers "$STACK")
	if [[ -n $left ]]; then
		printf '%s: cleanup left these behind:\n%s\n' "$me" "$left" >&2
		rc=1
	fi
	rm -f "$LOCK"
	return "$rc"
}

# is_running PID: alive and not a zombie waiting to be reaped
is_running() { local st; st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [[ ${st%% *} != Z ]]; }

# stop_pid NAME PID: TERM, wait up to 20 s, then KILL; only for our own
# children, by the PID we recorded when we started them.
stop_pid() {
	local name=$1 pid=$2 i
	is_running "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do
		is_running "$pid" || break
		sleep 0.1
	done
	if is_running "$pid"; then
		echo "$me: $name (pid $pid) ignored SIGTERM for 20 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# plan_json STACK-FILE OUT [RENDER-DIR]: `bulkhead plan --output json` into
# OUT (and its rendered files under RENDER-DIR). The figures and addresses
# the benchmarks need come from there, never from plan's text columns.
plan_json() {
	local render=()
	[[ -z ${3:-} ]] || render=(--render "$3")
	"$BH" plan --output json -f "$1" "${render[@]}" >"$2" 2>"$2.log" || { cat "$2.log" >&2; die "bulkhead plan -f $1 failed"; }
}

# jsonq FILE EXPR [ARG...]: prints EXPR, a python3 expression over j (FILE's
# JSON) and a (the ARGs), one line per item when it is a list. python3, not
# jq: .ci/run installs python3 already, and Debian 12 ships it; jq would be
# one more package for three lines of this.
jsonq() {
	python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2], {"j": j, "a": sys.argv[3:]})
for x in (v if isinstance(v, list) else [v]):
    print(x)
' "$@"
}

# node_addr PLAN-JSON NODE NETWORK: the node's address on that network in
# the plan; nothing when it has none.
node_addr() {
	jsonq "$1" '[i["addr"] for n in j["nodes"] if n["name"] == a[0] for i in n["interfaces"] if i["network"] == a[1]]' "$2" "$3"
}

# --- the monolithic baseline and CPU per cgroup --------------------------------
#
# bench/dataplane.sh and bench/wordpress.sh both measure a split stack
# against a monolith: the daemons of its app-1, db and cache rendered by
# bench/mono from the split's plan, in ONE network namespace. The caller
# sets REPO (the checkout), WORK (its work directory), M (the baseline's
# directory), MONO_NS (its namespace) and MONO_CG (the prefix of its
# daemons' cgroups, one per daemon, under CG_ROOT), and declares the arrays
# MONO_PIDS and MONO_NAMES. bench/dataplane.sh still defines its own
# copies of some of these (as of 2026-11-30), which win over these.

# The daemons' cgroups: cgroup v1's cpuacct hierarchy where it is mounted
# (Debian 12 hosts with hybrid cgroups), else the unified hierarchy.
if [[ -e /sys/fs/cgroup/cpuacct/cpuacct.usage ]]; then CG_ROOT=/sys/fs/cgroup/cpuacct; else CG_ROOT=/sys/fs/cgroup; fi

# mono_render PLAN-JSON PRIVATE-NET PUBLIC-NET [AGENT]: bench/mono's
# configs under $M, from the split's plan; AGENT is a bulkhead binary the
# baseline's PHP may run as its sendmail (WordPress's installer mails). Fail
# closed: a node path, a stack address or app-1's name in what it wrote
# means the renderer put one where neither the Layout nor the plan reaches,
# and the two sides would differ.
mono_render() {
	local agent=() f bad priv_re
	[[ -z ${4:-} ]] || agent=(-agent "$4")
	(cd "$REPO" && go build -o "$WORK/bench-mono" ./bench/mono) || die "go build ./bench/mono failed"
	"$WORK/bench-mono" -plan "$1" -dir "$M" "${agent[@]}" || die "bench/mono could not render the baseline"
	priv_re=${2%.*}.
	priv_re=${priv_re//./\\.}[0-9]{1,3}
	for f in "$M"/etc/*.conf "$M"/etc/my.cnf "$M"/etc/secrets/* "$M"/services/*.json; do
		bad=$(grep -nE "/(etc|run|srv|var/log|var/lib)/bulkhead|/srv/site|$priv_re|${3%.*}\.|\"app-1\"" "$f" || true)
		[[ -z $bad ]] || die "bench/mono's ${f#"$M"/} still names the split's paths, addresses or app-1; bench/mono needs updating:
$bad"
	done
	mkdir -p "$M"/{log,run/app/php-tmp,run/db,run/cache,mysql}
	chmod 1733 "$M/run/app/php-tmp"
	chown mysql:mysql "$M/run/db" "$M/mysql"
	# Who reads the secrets: php-fpm's workers the password, mariadbd its init file.
	chgrp www-data "$M/etc/secrets/db_password"
	chgrp mysql "$M/etc/secrets/mariadb-init.sql"
}

# svc_cmd NODE SERVICE [argv|setup]: the command bench/mono wrote for a
# daemon of NODE (mono, db or cache), one word a line
svc_cmd() { jsonq "$M/services/$1.json" '[w for s in j if s["name"] == a[0] for w in (s.get(a[1]) or [])]' "$2" "${3:-argv}"; }
in_mono() { ip netns exec "$MONO_NS" "$@"; }
tcp_open() { in_mono bash -c "exec 3<>/dev/tcp/$1/$2"; }

# start_mono NAME LOG CMD...: start in the background in the namespace and
# in cgroup $MONO_CG-NAME, record the PID
start_mono() {
	local name=$1 logf=$2 cg=$MONO_CG-$1
	shift 2
	[[ -n ${1:-} ]] || die "mono: no command for $name; bench/$me needs updating"
	mkdir "$cg" || die "mono: cannot make cgroup $cg"
	# sh joins the cgroup and execs ip, which execs the daemon: $! is the
	# daemon's PID, and every process it starts is in its cgroup. Joined
	# outside the namespace: ip netns exec mounts a /sys of its own, without
	# the cgroup file systems.
	sh -c 'echo $$ >"$0/cgroup.procs" && exec ip netns exec "$@"' "$cg" "$MONO_NS" "$@" >>"$logf" 2>&1 </dev/null 9>&- &
	MONO_PIDS+=("$!")
	MONO_NAMES+=("$name")
}

# wait_ready NAME PID SECONDS TEST...: poll TEST until it passes
wait_ready() {
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

# mono_clear_stale: a namespace or cgroups of the baseline left by a run
# that was killed are removed, if nothing runs in them.
mono_clear_stale() {
	local stale d
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
}

# mono_up: memcached, mariadb (after its setup), php-fpm and apache2 of the
# baseline, in the namespace, each ready before the next starts.
mono_up() {
	local cmd
	ip netns add "$MONO_NS"
	ip -n "$MONO_NS" link set lo up
	mapfile -t cmd < <(svc_cmd cache memcached)
	start_mono memcached "$M/log/memcached.log" "${cmd[@]}"
	wait_ready memcached "${MONO_PIDS[-1]}" 10 tcp_open 127.0.0.1 11211
	mapfile -t cmd < <(svc_cmd db mariadb setup)
	[[ ${cmd[0]:-} == mariadb-install-db ]] || die "mono: db's setup is not mariadb-install-db (${cmd[*]}); bench/$me needs updating"
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
}

# mono_down: the baseline's daemons stopped by PID, newest first, anything
# they left in the namespace killed, the namespace and cgroups removed.
mono_down() {
	local i pids d
	for ((i = ${#MONO_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${MONO_NAMES[i]}" "${MONO_PIDS[i]}"
	done
	MONO_PIDS=() MONO_NAMES=()
	if [[ -e /run/netns/$MONO_NS ]]; then
		# Children our daemons left behind (they are ours too), by PID.
		pids=$(ip netns pids "$MONO_NS" 2>/dev/null)
		if [[ -n $pids ]]; then
			echo "$me: killing leftover processes in $MONO_NS: $pids" >&2
			# shellcheck disable=SC2086
			kill -KILL $pids 2>/dev/null
			sleep 0.5
		fi
		ip netns del "$MONO_NS"
	fi
	for d in "$MONO_CG"-*; do
		[[ -d $d ]] || continue
		rmdir "$d" 2>/dev/null || echo "$me: cgroup $d still holds processes: $(tr '\n' ' ' <"$d/cgroup.procs")" >&2
	done
}

# mono_leftovers: what the baseline left on the host, one object a line
mono_leftovers() {
	local d
	ip netns list 2>/dev/null | awk -v m="$MONO_NS" '$1 == m {print "netns " $1}'
	for d in "$MONO_CG"-*; do [[ ! -d $d ]] || echo "cgroup $d"; done
}

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

# stack_cgroups STACK [PREFIX]: "PREFIXnode dir" for each running node of
# STACK (runc makes one cgroup per container)
stack_cgroups() {
	local id pid
	while read -r id pid; do
		echo "${2:-}${id#"bh-$1-"} $(cgroup_dir "$pid")"
	done < <(runc list -f json | jsonq /dev/stdin '[c["id"] + " " + str(c["pid"]) for c in j if c["id"].startswith("bh-" + a[0] + "-") and c["status"] == "running"]' "$1")
}

# cg_snap MAP: "label usage_us user_us sys_us" for each "label dir" line of
# MAP, then the host's softirq and irq time (where the kernel's network
# receive path mostly runs, whoever it works for) and its busy time, from
# /proc/stat. One process reads them all, so that every group's interval
# is wrk's run and little more, however busy the host.
cg_snap() {
	awk -v hz="$((1000000 / $(getconf CLK_TCK)))" '
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
		}' "$1"
}

# wrk_figures FILE: "rps p50_ms p99_ms requests non2xx socket_errors" (the
# last the sum of connect, read, write and timeout errors) from
# wrk --latency's output; nothing when wrk printed no result
wrk_figures() {
	awk '
		function ms(v,   n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; return sprintf("%.2f", n) }
		/^Requests\/sec:/ {rps = $2}
		$1 == "50%" {p50 = ms($2)}
		$1 == "99%" {p99 = ms($2)}
		/requests in/ {reqs = $1}
		/^ *Non-2xx or 3xx responses:/ {non = $NF + 0}
		/Socket errors:/ {gsub(/,/, ""); sock = $4 + $6 + $8 + $10}
		END { if (rps != "" && reqs > 0) print rps, p50, p99, reqs, non + 0, sock + 0 }' "$1"
}
