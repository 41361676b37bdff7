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
# ports ($HTTP_PUB, $HTTPS_PUB).
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
    replicas: $2
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
