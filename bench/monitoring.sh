#!/usr/bin/env bash
# bench/monitoring.sh: what the monitor tier costs a visitor, and what the
# monitor itself uses. Part of bench/run (--only monitoring); run it alone
# only to work on it.
#
# One stack, "benchmon" (the default stack with two app nodes), brought up
# in turn with the monitor tier ("on": Prometheus scraping every node's
# agent and the edge's nginx exporter every 5 s) and without it ("off":
# `bulkhead up` removes the monitor node, and the edge's exporter and
# status page go with it). In every round both states run the same wrk
# workloads from bh-benchmon-outside against the edge's public address,
# the order of the two states alternating from round to round:
#
#   small   GET /assets/style.css (the edge's micro-cache, then static)
#   cached  GET / (PHP on the app pool, the post list from memcached)
#
# on/off of requests a second, per workload, is the ratio #15 asks about
# (goal >= 0.97). With the monitor on, the monitor node's CPU (cores,
# from its cgroup's cpuacct.usage) and memory (memory.usage_in_bytes, and
# the anonymous part, total_rss) are read over 10 s at idle, after the
# up, and over each wrk run under load.
#
# Usage (root, Debian 12, wrk installed):
#   bench/monitoring.sh --data DIR     3 rounds of 5 s runs
#   bench/monitoring.sh --quick ...    1 round of 1 s runs
# Options: --rounds N, --duration SECONDS, --connections N, --bin BULKHEAD
# (else it builds one), --data DIR (where monitoring.tsv, monitoring-
# monitor.tsv and monitoring.md go), --keep (keep the work directory), -h.
#
# It asserts no speed. Exit status: 0 when everything ran; 1 when something
# is broken (build, up, a page that was not 200, wrk errors, or cleanup
# left something behind); 2 for a usage mistake.
#
# Only its own objects: stack "benchmon" (10.208.0.0/24, 10.208.1.0/28,
# 127.0.0.1:19164/19165), a mktemp work directory and the lock
# /run/lock/bhbench-monitoring.lock while it runs. It stops only the wrk it
# started, by PID, and a stack "benchmon" left by a killed run is removed
# first.
set -euo pipefail
started=$(date +%s) me=monitoring.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

STACK=benchmon
PRIVATE_NET=10.208.0.0/24
PUBLIC_NET=10.208.1.0/28
HTTP_PUB=127.0.0.1:19164
HTTPS_PUB=127.0.0.1:19165
OUTSIDE_NS=bh-$STACK-outside
WORKLOADS=(small cached)
declare -A URLPATH=([small]=/assets/style.css [cached]=/)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
quick=0 rounds= duration= conns=32 data= keep=0 bin=
while (($#)); do
	case $1 in
	--quick) quick=1 ;;
	--rounds) rounds=${2:?--rounds needs a number}; shift ;;
	--duration) duration=${2:?--duration needs seconds}; shift ;;
	--connections) conns=${2:?--connections needs a number}; shift ;;
	--data) data=${2:?--data needs a directory}; shift ;;
	--bin) bin=${2:?--bin needs a file}; shift ;;
	--keep) keep=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "monitoring.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
	shift
done
if ((quick)); then : "${rounds:=1}" "${duration:=1}"; else : "${rounds:=3}" "${duration:=5}"; fi
for v in rounds duration conns; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "monitoring.sh: --$v must be a positive integer" >&2; exit 2; }
done
WRK_ARGS=(-t2 -c"$conns" -d"${duration}s" --latency)

((EUID == 0)) || die "run as root (it brings a bulkhead stack up)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
for c in wrk curl ip ss awk flock runc python3; do
	command -v "$c" >/dev/null || die "$c not found (wrk is Debian's wrk)"
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/bhbenchmon.XXXXXX)
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
	[[ -z $wrk_pid ]] || stop_pid wrk "$wrk_pid"
	release_stack || rc=1
	if ((keep)) || ((rc != 0)); then
		echo "monitoring.sh: work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
set -E
trap 'echo "monitoring.sh: line $LINENO: a command failed (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

take_lock monitoring
if [[ -z $bin ]]; then
	log "building bulkhead into $BH"
	(cd "$REPO" && go build -o "$BH" ./cmd/bulkhead) || die "go build failed"
fi
[[ -x $BH ]] || die "$BH is not an executable"
BH=$(cd "$(dirname "$BH")" && pwd)/$(basename "$BH")
remove_stale_stack "$STACK"
ports_free "$HTTP_PUB" "$HTTPS_PUB"

"$BH" init "$WORK/stack" >/dev/null
# set_monitor on|off: the stack file with or without the monitor tier, up.
set_monitor() {
	write_stack "$STACK_FILE" 2
	[[ $1 == off ]] || echo "  monitor: {}" >>"$STACK_FILE"
	log "bulkhead up, monitor $1"
	tried=1
	"$BH" up -f "$STACK_FILE" >"$WORK/up.log" 2>&1 9>&- || { cat "$WORK/up.log" >&2; die "bulkhead up (monitor $1) failed"; }
}
set_monitor on
plan_json "$STACK_FILE" "$WORK/plan.json"
edge_pub=$(node_addr "$WORK/plan.json" edge public)
[[ $edge_pub =~ ^[0-9.]+$ ]] || die "no public address for the edge in the plan"
ip -o route get "$edge_pub" 2>/dev/null | grep -q " dev $STACK-pub " || die "$edge_pub does not route into bridge $STACK-pub"
[[ -e /run/netns/$OUTSIDE_NS ]] || die "bulkhead up made no namespace $OUTSIDE_NS"
for w in "${WORKLOADS[@]}"; do
	code=$(ip netns exec "$OUTSIDE_NS" curl -sS -m 10 -o /dev/null -w '%{http_code}' "http://$edge_pub${URLPATH[$w]}") || true
	[[ $code == 200 ]] || die "GET ${URLPATH[$w]} answered $code, not 200"
done

# node_cg NODE CONTROLLER: the node's container's cgroup directory for it.
node_cg() {
	local pid rel
	# runc state, not runc list: list fails while another stack's
	# container is half gone.
	pid=$(runc state "bh-$STACK-$1" | jsonq /dev/stdin 'j["pid"] if j["status"] == "running" else ""')
	[[ $pid =~ ^[0-9]+$ ]] || die "no running container bh-$STACK-$1"
	rel=$(awk -F: -v c="$2" '{n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) print $3}' "/proc/$pid/cgroup")
	[[ -n $rel && $rel != / && -d /sys/fs/cgroup/$2$rel ]] || die "no $2 cgroup of its own for $1 (pid $pid)"
	echo "/sys/fs/cgroup/$2$rel"
}
monitor_cg() { node_cg monitor "$1"; }
cpu_ns() { cat "$(monitor_cg cpuacct)/cpuacct.usage"; }
# mem_line: memory.usage_in_bytes and total_rss, in MiB
mem_line() {
	local d
	d=$(monitor_cg memory)
	awk -v u="$(cat "$d/memory.usage_in_bytes")" '$1 == "total_rss" {printf "%.1f\t%.1f", u / 1048576, $2 / 1048576}' "$d/memory.stat"
}

# cpu_snap: CPU nanoseconds so far of every node's cgroup ("node/NAME
# NS"), and of each process in the edge's cgroup by command ("edge/COMM
# NS", from /proc/PID/stat's utime and stime, in clock ticks), which is
# where the monitor's cost to a visitor can hide: the nginx exporter, the
# agent's access log reads, nginx's own work. It reads only files, from
# the cgroups cg_find found, so that it takes milliseconds and the CPU it
# reports is the wrk run's.
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
declare -A CG=()
# cg_find: every running node's cpuacct cgroup into CG, after each up.
cg_find() {
	local n
	CG=()
	for n in "${NODES[@]}"; do
		[[ $n != monitor || $state == on ]] || continue
		CG[$n]=$(node_cg "$n" cpuacct)
	done
}
cpu_snap() {
	local n
	for n in "${!CG[@]}"; do
		echo "node/$n $(<"${CG[$n]}/cpuacct.usage")"
	done
	# comm has no spaces in the edge (nginx, bulkhead, prometheus-ngin).
	find "${CG[edge]}" -name cgroup.procs -exec cat {} + | sed 's|.*|/proc/&/stat|' |
		xargs awk -v t="$TICK_NS" '{gsub(/[()]/, "", $2); s["edge/" $2] += ($14 + $15) * t} END {for (k in s) print k, s[k]}' 2>/dev/null ||
		true # a process that ended since cgroup.procs was read
}
mapfile -t NODES < <(jsonq "$WORK/plan.json" '[n["name"] for n in j["nodes"]]')

RESULTS=$data/monitoring.tsv MON=$data/monitoring-monitor.tsv CPU=$data/monitoring-cpu.tsv
printf 'round\tmonitor\tworkload\trps\tp99_ms\tnon2xx\tsocket_errors\n' >"$RESULTS"
printf 'round\tmonitor\tworkload\twho\tcpu_seconds\trequests\n' >"$CPU"
printf 'round\tphase\tseconds\tcpu_cores\tmemory_mib\trss_mib\n' >"$MON"
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; printf "%.2f", n }'; }
broken=0
# run ROUND STATE WORKLOAD: one wrk run; with the monitor on, its CPU and
# memory over the run.
run() {
	local r=$1 state=$2 w=$3 f c0 t0 c1 secs mem rps p99 non2xx sockerr
	f=$WORK/wrk-$r-$state-$w.txt
	if [[ $state == on ]]; then
		c0=$(cpu_ns)
		t0=$(date +%s.%N)
	fi
	cpu_snap >"$f.cpu0"
	ip netns exec "$OUTSIDE_NS" wrk "${WRK_ARGS[@]}" "http://$edge_pub${URLPATH[$w]}" >"$f" 2>&1 9>&- &
	wrk_pid=$!
	wait "$wrk_pid" || { echo "monitoring.sh: wrk failed:" >&2; cat "$f" >&2; broken=1; }
	wrk_pid=
	cpu_snap >"$f.cpu1"
	awk -v r="$r" -v s="$state" -v w="$w" -v n="$(awk '/ requests in / {print $1}' "$f")" \
		'NR == FNR {a[$1] = $2; next} {printf "%s\t%s\t%s\t%s\t%.4f\t%s\n", r, s, w, $1, ($2 - a[$1]) / 1e9, n}' "$f.cpu0" "$f.cpu1" >>"$CPU"
	if [[ $state == on ]]; then
		c1=$(cpu_ns)
		secs=$(since "$t0" 3)
		mem=$(mem_line)
		printf '%s\tload:%s\t%s\t%s\t%s\n' "$r" "$w" "$secs" "$(awk -v a="$c0" -v b="$c1" -v s="$secs" 'BEGIN {printf "%.3f", (b - a) / 1e9 / s}')" "$mem" >>"$MON"
	fi
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
	p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
	non2xx=$(awk -F': ' '/^ *Non-2xx or 3xx responses:/ {print $2 + 0}' "$f")
	sockerr=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$f")
	((${non2xx:-0} == 0 && ${sockerr:-0} == 0)) || { echo "monitoring.sh: round $r monitor $state $w: $non2xx non-2xx, $sockerr socket errors" >&2; broken=1; }
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$state" "$w" "${rps:-0}" "$p99" "${non2xx:-0}" "${sockerr:-0}" >>"$RESULTS"
	log "round $r monitor $state $w: ${rps:-?} req/s, p99 ${p99} ms"
}
# idle ROUND: the monitor's CPU and memory over 10 s with no visitors,
# once Prometheus has scraped a few times.
idle() {
	local c0 c1 t0 secs mem
	sleep 10
	c0=$(cpu_ns)
	t0=$(date +%s.%N)
	sleep 10
	c1=$(cpu_ns)
	secs=$(since "$t0" 3)
	mem=$(mem_line)
	printf '%s\tidle\t%s\t%s\t%s\n' "$1" "$secs" "$(awk -v a="$c0" -v b="$c1" -v s="$secs" 'BEGIN {printf "%.3f", (b - a) / 1e9 / s}')" "$mem" >>"$MON"
}

state=on # the stack is up with the monitor
cg_find
for ((r = 1; r <= rounds; r++)); do
	order=(on off)
	((r % 2)) || order=(off on)
	for s in "${order[@]}"; do
		if [[ $s != "$state" ]]; then
			set_monitor "$s"
			state=$s
			cg_find
		fi
		if [[ $s == on ]]; then
			idle "$r"
		fi
		for w in "${WORKLOADS[@]}"; do
			run "$r" "$s" "$w"
		done
	done
done

# The summary: on/off of the mean requests a second per workload, and the
# monitor's use.
python3 - "$RESULTS" "$MON" "$CPU" >"$data/monitoring.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
mon = list(csv.DictReader(open(sys.argv[2]), delimiter="\t"))
cpu = list(csv.DictReader(open(sys.argv[3]), delimiter="\t"))
print("## Monitoring on vs off (bench/monitoring.sh)\n")
print("| workload | off req/s | on req/s | on/off | off p99 ms | on p99 ms |")
print("|---|---|---|---|---|---|")
for w in dict.fromkeys(r["workload"] for r in rows):
    def mean(state, k):
        v = [float(r[k]) for r in rows if r["workload"] == w and r["monitor"] == state]
        return sum(v) / len(v) if v else float("nan")
    off, on = mean("off", "rps"), mean("on", "rps")
    print(f"| {w} | {off:.0f} | {on:.0f} | {on / off:.3f} | {mean('off', 'p99_ms'):.2f} | {mean('on', 'p99_ms'):.2f} |")
print("\nCPU per request (µs), by node and by process in the edge, summed over")
print("the rounds (cgroup cpuacct.usage; /proc/PID/stat for processes):\n")
print("| workload | who | off µs/req | on µs/req | on − off |")
print("|---|---|---|---|---|")
for w in dict.fromkeys(r["workload"] for r in cpu):
    def per(state, who):
        c = [r for r in cpu if r["workload"] == w and r["monitor"] == state and r["who"] == who]
        n = sum(int(r["requests"] or 0) for r in c)
        return sum(float(r["cpu_seconds"]) for r in c) / n * 1e6 if n else 0.0
    whos = sorted(dict.fromkeys(r["who"] for r in cpu if r["workload"] == w), key=lambda k: (not k.startswith("node/"), k))
    for who in whos:
        off, on = per("off", who), per("on", who)
        print(f"| {w} | {who} | {off:.2f} | {on:.2f} | {on - off:+.2f} |")
print("\nThe monitor node (Prometheus), per round:\n")
print("| round | phase | CPU (cores) | memory MiB | RSS MiB |")
print("|---|---|---|---|---|")
for m in mon:
    print(f"| {m['round']} | {m['phase']} | {m['cpu_cores']} | {m['memory_mib']} | {m['rss_mib']} |")
EOF
cat "$data/monitoring.md"
((broken == 0)) || die "something was broken; see above"
