#!/usr/bin/env bash
# bench/change.sh: what changing a live stack costs its visitors. Part of
# bench/run, which runs it and turns what it writes into the results; run it
# alone only to work on it.
#
# A stack "benchchg" (the default tiers, 2 app nodes, the sample site) is
# brought up. Then, in each round, wrk runs from bh-benchchg-outside, the
# namespace `bulkhead up` makes on the stack's public bridge for verify's
# outside vantage point, against the edge's public address (the path a
# visitor takes), for the whole of each of three phases:
#   steady      no change, for --duration seconds: the baseline
#   scale-up    tiers.app.replicas 2 -> 6 in the stack file, `bulkhead up`
#   scale-down  6 -> 2, `bulkhead up`
#   deploy      a changed PHP file in the site, `bulkhead deploy` (a surge
#               node with the new release, then each app node switched)
#   rollback    `bulkhead rollback` to the release live before
# Each phase's wrk starts 1 s before the change and is stopped (SIGINT, on
# which it prints its figures) 2 s after the change returns, so that what
# up leaves to finish in the background happens under load too. GET / is
# PHP: the load reaches the app pool, not the edge's cache.
#
# Per phase it records the requests, wrk's non-2xx/3xx responses (statuses
# of 400 and above) and socket errors (connect, read, write, timeout; wrk
# counts a refused or reset connection once per attempt, so a port that is
# down for a second shows thousands), the p50/p99 latency, and how long the
# change took. The report adds each change phase's p99 over the same
# round's steady p99.
#
# Failed requests during a change are what this workload measures, not a
# broken run: they are recorded (status "failed requests") and the run goes
# on. TestChangeUnderLoad in e2e/ is the check that there are none.
#
# Usage (root, Debian 12, wrk installed):
#   bench/change.sh --data DIR          full run: 3 rounds, 5 s steady phases
#   bench/change.sh --quick ...         1 round, 1 s steady phase (for CI)
# Options: --rounds N, --duration SECONDS (the steady phase), --to N (the
#          app nodes to scale to, 6 by default), --connections N (8),
#          --threads N (2), --bin BULKHEAD (else it builds one), --data DIR
#          (where the raw results go: change.tsv, change-meta.tsv and, when a
#          phase had failed requests, change-diagnostics.md), --keep (keep
#          the work directory), -h.
#
# It asserts no speed. Exit status: 0 when everything ran; 1 when something
# is broken (build, the stack would not come up or answer 200, a bulkhead
# command failed, wrk failed, the steady phase had errors, or cleanup left
# something behind); 2 for a usage mistake.
#
# Only its own objects: stack "benchchg" (10.242.0.0/24, 10.242.1.0/28,
# 127.0.0.1:19100/19101), a mktemp work directory, and the lock
# /run/lock/bhbench-change.lock while it runs. It stops only the wrk it
# started, by PID, and cleans up on any exit; a stack "benchchg" left by a
# run that was killed is removed first.
set -euo pipefail
started=$(date +%s) me=change.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

STACK=benchchg
PRIVATE_NET=10.242.0.0/24
PUBLIC_NET=10.242.1.0/28
HTTP_PUB=127.0.0.1:19100
HTTPS_PUB=127.0.0.1:19101
OUTSIDE_NS=bh-$STACK-outside
FROM=2
SETTLE=1 TAIL=2 # seconds of load before each change and after it returns

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

quick=0 rounds= duration= to=6 conns=8 threads=2 data= keep=0 bin=
while (($#)); do
	case $1 in
	--quick) quick=1 ;;
	--rounds) rounds=${2:?--rounds needs a number}; shift ;;
	--duration) duration=${2:?--duration needs seconds}; shift ;;
	--to) to=${2:?--to needs a number}; shift ;;
	--connections) conns=${2:?--connections needs a number}; shift ;;
	--threads) threads=${2:?--threads needs a number}; shift ;;
	--data) data=${2:?--data needs a directory}; shift ;;
	--bin) bin=${2:?--bin needs a file}; shift ;;
	--keep) keep=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "change.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
	shift
done
if ((quick)); then
	: "${rounds:=1}" "${duration:=1}"
else
	: "${rounds:=3}" "${duration:=5}"
fi
for v in rounds duration to conns threads; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "change.sh: --$v must be a positive integer" >&2; exit 2; }
done
((to != FROM)) || { echo "change.sh: --to must differ from $FROM" >&2; exit 2; }
# -d only bounds a run that is never stopped; every run is stopped by
# SIGINT. A request that takes over 10 s has failed its visitor.
WRK_ARGS=(-t"$threads" -c"$conns" -d600s --timeout 10s --latency)

((EUID == 0)) || die "run as root (it brings a bulkhead stack up)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
for c in wrk curl ip ss awk flock nft runc python3; do
	command -v "$c" >/dev/null || die "$c not found (wrk is Debian's wrk)"
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/bhbenchchg.XXXXXX)
[[ -n $data ]] || data=$WORK/data
mkdir -p "$data"
data=$(cd "$data" && pwd)
BH=${bin:-$WORK/bulkhead}
STACK_FILE=$WORK/stack/bulkhead.yaml
have_lock=0 tried=0 wrk_pid=

cleanup() {
	local rc=$? left
	set +e
	trap - EXIT INT TERM ERR
	if [[ -n $wrk_pid ]]; then
		stop_pid wrk "$wrk_pid"
	fi
	if ((have_lock)); then
		if ((tried)); then
			purge_stack "$STACK" "$STACK_FILE" || rc=1
		fi
		left=$(stack_leftovers "$STACK")
		if [[ -n $left ]]; then
			printf 'change.sh: cleanup left these behind:\n%s\n' "$left" >&2
			rc=1
		fi
		rm -f "$LOCK"
	fi
	if ((keep)) || [[ -n ${left:-} ]] || ((rc != 0)); then
		echo "change.sh: work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
set -E # say where an unexpected failure happened, even inside a function
trap 'echo "change.sh: line $LINENO: a command failed (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

take_lock change # LOCK; bulkhead up starts with 9>&-
if [[ -z $bin ]]; then
	log "building bulkhead into $BH"
	(cd "$REPO" && go build -o "$BH" ./cmd/bulkhead) || die "go build failed"
fi
[[ -x $BH ]] || die "$BH is not an executable"
BH=$(cd "$(dirname "$BH")" && pwd)/$(basename "$BH")
remove_stale_stack "$STACK"
ports_free "$HTTP_PUB" "$HTTPS_PUB"

"$BH" init "$WORK/stack" >/dev/null
write_stack "$STACK_FILE" "$FROM"
plan_json "$STACK_FILE" "$WORK/plan.json"

log "bringing stack $STACK up with $FROM app nodes"
tried=1
t0=$(date +%s.%N)
"$BH" up -f "$STACK_FILE" >&2 9>&- || die "bulkhead up failed"
up_cold_s=$(since "$t0")

# The edge's public address. Fail closed: it must route into the stack's
# own bridge from the host, and the client namespace must be the stack's own.
edge_pub=$(node_addr "$WORK/plan.json" edge public)
[[ $edge_pub =~ ^[0-9.]+$ ]] || die "no public address for the edge in the plan"
ip -o route get "$edge_pub" 2>/dev/null | grep -q " dev $STACK-pub " || die "$edge_pub does not route into bridge $STACK-pub"
[[ $(jsonq "$WORK/plan.json" 'j["outside"]["netns"]') == "$OUTSIDE_NS" && -e /run/netns/$OUTSIDE_NS ]] ||
	die "bulkhead up made no namespace $OUTSIDE_NS"
URL=http://$edge_pub/
served=$(ip netns exec "$OUTSIDE_NS" curl -sS -m 10 -o /dev/null -D - "$URL" |
	awk 'NR == 1 {c = $2} tolower($1) == "x-served-by:" {b = $2} END {sub(/\r$/, "", b); print c, b}') || true
[[ $served == "200 app-"* ]] || die "GET $URL from $OUTSIDE_NS answered \"$served\", not 200 from an app node"

RESULTS=$data/change.tsv DIAG=$data/change-diagnostics.md
printf 'round\tphase\tchange_s\tduration_s\trequests\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\tfailed\tstatus\n' >"$RESULTS"
rm -f "$DIAG"
broken=0

# to_ms WRK-TIME: wrk's 812.00us, 7.80ms, 1.86s, 1.02m in milliseconds
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000; printf "%.2f", n }'; }

# phase ROUND NAME CMD...: wrk from outside for the whole of CMD, from
# SETTLE s before it to TAIL s after it returns; one line of change.tsv
phase() {
	local r=$1 name=$2 f=$WORK/wrk-$1-$2.txt upout=$WORK/up-$1-$2.txt t0 secs rc=0 wrc=0
	local reqs dur rps p50 p99 non2xx sock failed status=ok
	shift 2
	ip netns exec "$OUTSIDE_NS" wrk "${WRK_ARGS[@]}" "$URL" >"$f" 2>&1 9>&- &
	wrk_pid=$!
	sleep "$SETTLE"
	t0=$(date +%s.%N)
	"$@" >"$upout" 2>&1 9>&- || rc=$?
	secs=$(since "$t0" 2)
	sleep "$TAIL"
	is_running "$wrk_pid" || { echo "change.sh: wrk ended before round $r $name did:" >&2; cat "$f" >&2; broken=1; }
	kill -INT "$wrk_pid" 2>/dev/null || true
	wait "$wrk_pid" || wrc=$?
	wrk_pid=
	if ((rc != 0)); then
		echo "change.sh: round $r $name: $* failed (exit $rc):" >&2
		tail -n 30 "$upout" >&2
		broken=1
	fi
	reqs=$(awk '/requests in/ {print $1}' "$f")
	dur=$(awk '/requests in/ {sub(/,$/, "", $4); print $4}' "$f")
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
	p50=$(awk '$1 == "50%" {print $2}' "$f")
	p99=$(awk '$1 == "99%" {print $2}' "$f")
	non2xx=$(awk -F': ' '/^ *Non-2xx or 3xx responses:/ {print $2 + 0}' "$f")
	sock=$(awk '/Socket errors:/ {gsub(/,/, ""); print "connect " $4 ", read " $6 ", write " $8 ", timeout " $10}' "$f")
	failed=$(awk '/Socket errors:/ {gsub(/,/, ""); s = $4 + $6 + $8 + $10} /^ *Non-2xx or 3xx responses:/ {n = $NF} END {print s + n}' "$f")
	: "${non2xx:=0}"
	if ((wrc != 0)) || [[ -z $reqs || -z $rps || -z $p50 || -z $p99 || $reqs == 0 ]]; then
		echo "change.sh: wrk failed (exit $wrc) in round $r $name:" >&2
		cat "$f" >&2
		broken=1
		printf '%s\t%s\t%s\t-\t0\t-\t-\t-\t-\t-\t-\twrk failed (exit %s)\n' "$r" "$name" "$secs" "$wrc" >>"$RESULTS"
		return
	fi
	if ((failed > 0)); then
		status="failed requests"
		[[ $name != steady ]] || broken=1 # no change: the stack itself is broken
		{
			printf '\n#### round %s, %s: %s failed (non-2xx/3xx %s; socket errors: %s)\n\n' "$r" "$name" "$failed" "$non2xx" "${sock:-0}"
			if [[ $name != steady ]]; then
				printf 'The last lines of what `bulkhead up` printed:\n\n```\n'
				tail -n 25 "$upout"
				printf '```\n'
			fi
		} >>"$DIAG"
	fi
	p50=$(to_ms "$p50") p99=$(to_ms "$p99")
	dur=$(awk -v ms="$(to_ms "$dur")" 'BEGIN {printf "%.2f", ms / 1000}')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$secs" "$dur" "$reqs" "$rps" "$p50" "$p99" \
		"$non2xx" "${sock:-0}" "$failed" "$status" >>"$RESULTS"
	printf '   round %s %-10s change %6ss  %7s requests  p50 %8s ms  p99 %9s ms  non-2xx/3xx %s  socket errors %s\n' \
		"$r" "$name" "$secs" "$reqs" "$p50" "$p99" "$non2xx" "${sock:-0}" >&2
}

scale() { # N: the stack file with N app nodes, then bulkhead up
	write_stack "$STACK_FILE" "$1"
	"$BH" up -f "$STACK_FILE"
}

deploy() { # ROUND: a changed PHP file, then bulkhead deploy
	printf '<?php echo "round %s";\n' "$1" >"$WORK/stack/site/version.php"
	"$BH" deploy -f "$STACK_FILE"
}

rollback() { "$BH" rollback -f "$STACK_FILE"; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= rounds; r++)); do
	log "round $r of $rounds: wrk ${WRK_ARGS[*]} $URL from $OUTSIDE_NS"
	phase "$r" steady sleep "$duration"
	phase "$r" scale-up scale "$to"
	phase "$r" scale-down scale "$FROM"
	phase "$r" deploy deploy "$r"
	phase "$r" rollback rollback
	((broken == 0)) || break
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

{
	printf 'key\tvalue\n'
	printf 'wrk\twrk %s\n' "${WRK_ARGS[*]}"
	printf 'rounds\t%s\n' "$rounds"
	printf 'steady_s\t%s\n' "$duration"
	printf 'settle_s\t%s\n' "$SETTLE"
	printf 'tail_s\t%s\n' "$TAIL"
	printf 'from\t%s\n' "$FROM"
	printf 'to\t%s\n' "$to"
	printf 'up_cold_s\t%s\n' "$up_cold_s"
	printf 'edge_public\t%s\n' "$edge_pub"
	printf 'client_netns\t%s\n' "$OUTSIDE_NS"
	printf 'load_start\t%s\n' "$load_start"
	printf 'load_end\t%s\n' "$load_end"
	printf 'elapsed_s\t%s\n' "$(($(date +%s) - started))"
} >"$data/change-meta.tsv"
((broken == 0)) || die "something was broken; see above"
log "change done in $(($(date +%s) - started))s; raw results in $data"
