#!/usr/bin/env bash
# bench/monitorcost.sh: where the monitor tier's cost to a visitor goes,
# node by node and process by process in the edge. bench/monitoring.sh
# measures on against off, with an up between them; this keeps one stack
# up with its monitor and freezes Prometheus (runc pause) in every other
# state, so that nothing is scraped: "paused" is the stack as it is
# monitored with no scrape, "scraped" as Prometheus runs, every 5 s. The
# difference is what the scrapes cost, and it is measured as CPU a
# request (cgroup cpuacct.usage per node; /proc/PID/stat per process in
# the edge), which a shared, busy host disturbs far less than requests a
# second. Several stacks (each with its own bulkhead binary, and so its
# own agent) can be measured in one run, one wrk at a time, in turn.
#
# Usage (root, Debian 12, wrk installed):
#   bench/monitorcost.sh --data DIR [--rounds N] [--duration S] \
#       --stack NAME,X,HTTP-PORT,BULKHEAD ...
# where the stack's subnets are 10.X.0.0/24 and 10.X.1.0/28 and it is
# published on 127.0.0.1:HTTP-PORT and HTTP-PORT+1. Each stack is the
# default one with the monitor, brought up at the start and purged at the
# end. It asserts no speed; exit status 0 when everything ran, 1 otherwise.
set -euo pipefail
started=$(date +%s) me=monitorcost.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

rounds=4 duration=5 conns=32 data= specs=()
while (($#)); do
	case $1 in
	--rounds) rounds=${2:?}; shift ;;
	--duration) duration=${2:?}; shift ;;
	--data) data=${2:?}; shift ;;
	--stack) specs+=("${2:?}"); shift ;;
	*) echo "$me: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[[ -n $data && ${#specs[@]} -gt 0 ]] || { echo "$me: --data and at least one --stack are needed" >&2; exit 2; }
((EUID == 0)) || die "run as root"
mkdir -p "$data"
WORK=$(mktemp -d /tmp/bhmoncost.XXXXXX)
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
declare -A URLPATH=([small]=/assets/style.css [cached]=/)
declare -A BIN=() FILE=() PUB=() CG=()
NAMES=()

cleanup() {
	local rc=$? n
	set +e
	for n in "${NAMES[@]}"; do
		runc resume "bh-$n-monitor" 2>/dev/null
		"${BIN[$n]}" down --purge -f "${FILE[$n]}" >&2 || rc=1
	done
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
set -E
trap 'echo "$me: line $LINENO: a command failed (exit $?)" >&2' ERR

for spec in "${specs[@]}"; do
	IFS=, read -r n x port bin <<<"$spec"
	NAMES+=("$n")
	BIN[$n]=$bin
	mkdir -p "$WORK/$n"
	"$bin" init "$WORK/$n" >/dev/null
	FILE[$n]=$WORK/$n/bulkhead.yaml
	STACK=$n PRIVATE_NET=10.$x.0.0/24 PUBLIC_NET=10.$x.1.0/28 HTTP_PUB=127.0.0.1:$port HTTPS_PUB=127.0.0.1:$((port + 1)) \
		write_stack "${FILE[$n]}" 2
	echo "  monitor: {}" >>"${FILE[$n]}"
	log "bulkhead up $n"
	"$bin" up -f "${FILE[$n]}" >"$WORK/$n/up.log" 2>&1 9>&- || { cat "$WORK/$n/up.log" >&2; die "up $n failed"; }
	BH=$bin plan_json "${FILE[$n]}" "$WORK/$n/plan.json"
	PUB[$n]=$(node_addr "$WORK/$n/plan.json" edge public)
	for node in $(jsonq "$WORK/$n/plan.json" '[m["name"] for m in j["nodes"]]'); do
		pid=$(runc state "bh-$n-$node" | jsonq /dev/stdin 'j["pid"]')
		rel=$(awk -F: '{k = split($2, a, ","); for (i = 1; i <= k; i++) if (a[i] == "cpuacct") print $3}' "/proc/$pid/cgroup")
		CG[$n/$node]=/sys/fs/cgroup/cpuacct$rel
	done
done

# snap STACK: node/NAME NS for every node, edge/COMM NS for the edge's
# processes; files only, so that it takes milliseconds.
snap() {
	local k
	for k in "${!CG[@]}"; do
		if [[ $k == "$1"/* ]]; then echo "node/${k#*/} $(<"${CG[$k]}/cpuacct.usage")"; fi
	done
	find "${CG[$1/edge]}" -name cgroup.procs -exec cat {} + | sed 's|.*|/proc/&/stat|' |
		xargs awk -v t="$TICK_NS" '{gsub(/[()]/, "", $2); s["edge/" $2] += ($14 + $15) * t} END {for (k in s) print k, s[k]}' 2>/dev/null ||
		true # a process that ended since cgroup.procs was read
}

OUT=$data/monitorcost.tsv
printf 'stack\tround\tstate\tworkload\twho\tcpu_seconds\trequests\trps\n' >"$OUT"
for ((r = 1; r <= rounds; r++)); do
	order=(scraped paused)
	((r % 2)) || order=(paused scraped)
	for n in "${NAMES[@]}"; do
		for s in "${order[@]}"; do
			# Every monitor runs when a stack's round starts (resume fails
			# on a container that is not paused).
			if [[ $s == paused ]]; then runc pause "bh-$n-monitor"; else runc resume "bh-$n-monitor" 2>/dev/null || true; fi
			sleep 6 # a scrape or none, then steady
			for w in small cached; do
				f=$WORK/$n-$r-$s-$w
				snap "$n" >"$f.0"
				ip netns exec "bh-$n-outside" wrk -t2 -c"$conns" -d"${duration}s" "http://${PUB[$n]}${URLPATH[$w]}" >"$f.wrk" 2>&1 9>&-
				snap "$n" >"$f.1"
				reqs=$(awk '/ requests in / {print $1}' "$f.wrk")
				rps=$(awk '/^Requests\/sec:/ {print $2}' "$f.wrk")
				awk -v p="$n	$r	$s	$w" -v q="$reqs" -v rps="$rps" 'NR == FNR {a[$1] = $2; next} ($1 in a) {printf "%s\t%s\t%.4f\t%s\t%s\n", p, $1, ($2 - a[$1]) / 1e9, q, rps}' "$f.0" "$f.1" >>"$OUT"
				log "$n round $r $s $w: $rps req/s"
			done
		done
		# Running again while the next stack is measured, and paused
		# only where a round pauses it.
		runc resume "bh-$n-monitor" 2>/dev/null || true
	done
done

python3 - "$OUT" >"$data/monitorcost.md" <<'EOF'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("## Monitoring's cost by node: Prometheus scraping vs paused (bench/monitorcost.sh)\n")
for st in dict.fromkeys(r["stack"] for r in rows):
    for w in dict.fromkeys(r["workload"] for r in rows):
        sel = [r for r in rows if r["stack"] == st and r["workload"] == w]
        req, rps = collections.Counter(), collections.defaultdict(list)
        for r in sel:
            if r["who"] == "node/edge":
                req[r["state"]] += int(r["requests"]); rps[r["state"]].append(float(r["rps"]))
        mean = lambda v: sum(v) / len(v)
        print(f"\n### {st}, {w}: req/s paused {mean(rps['paused']):.0f}, scraped {mean(rps['scraped']):.0f}, scraped/paused {mean(rps['scraped']) / mean(rps['paused']):.3f}\n")
        print("| who | paused µs/req | scraped µs/req | scraped − paused |")
        print("|---|---|---|---|")
        cpu = collections.Counter()
        for r in sel:
            cpu[(r["who"], r["state"])] += float(r["cpu_seconds"])
        whos = sorted(dict.fromkeys(r["who"] for r in sel), key=lambda k: (not k.startswith("node/"), k))
        tot = collections.Counter()
        for who in whos:
            v = {s: cpu[(who, s)] / req[s] * 1e6 for s in ("paused", "scraped")}
            if who.startswith("node/"):
                tot.update(v)
            print(f"| {who} | {v['paused']:.2f} | {v['scraped']:.2f} | {v['scraped'] - v['paused']:+.2f} |")
        print(f"| all nodes | {tot['paused']:.2f} | {tot['scraped']:.2f} | {tot['scraped'] - tot['paused']:+.2f} ({(tot['scraped'] / tot['paused'] - 1) * 100:+.1f}%) |")
EOF
cat "$data/monitorcost.md"
