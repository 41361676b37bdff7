#!/usr/bin/env bash
# bench/wordpress.sh: WordPress's front page, split against monolithic (issue
# #17: goal split/mono >= 0.9). Part of bench/run, which runs it and turns
# what it writes into the results; run it alone only to work on it.
#
#   split  a stack written by `bulkhead init --app wordpress` (Debian's
#          WordPress, edge -> static / app x2 -> cache, db; uploads on the
#          storage node), under the benchmark's name, subnets and ports; wrk
#          in bh-benchwp-outside against the edge's public address, as
#          bench/dataplane.sh's split
#   mono   the same WordPress tree, with the same apache2 + php-fpm +
#          mariadb + memcached configs (bench/mono renders app-1's, db's and
#          cache's from the split's plan) in ONE network namespace,
#          bhbench-wpmono; wrk inside it against apache2 on 127.0.0.1:80
#
# Both WordPress sites are installed the same way, through their installer
# (as a visitor does), then get the same posts through the REST API with a
# login cookie, as wp-admin's editor makes them. Both know themselves as
# http://127.0.0.1:19154 (the split's published address): wrk sends that
# Host to both, so neither redirects. The workload is GET / (the front
# page: the newest posts), interleaved rounds, the same wrk parameters.
#
# CPU per request: before and after each run, the CPU time of each node's
# cgroup (runc's), of each mono daemon's cgroup, of the split's sshfs
# clients (host processes, in no node's cgroup) and the host's softirq;
# wordpress-cgroups.tsv holds the deltas. Each run starts and ends with the
# servers idle (a front page can take seconds on a loaded host, and the
# requests in flight when wrk stops go on): the window holds wrk's requests
# and the connections' last ones, which the servers finish, so those count
# as requests too (wrk's count plus --connections).
#
# Usage (root, Debian 12, wrk and Debian's wordpress and
# wordpress-theme-twentytwentythree installed):
#   bench/wordpress.sh --bin BULKHEAD --data DIR    3 rounds of 15 s runs
#   bench/wordpress.sh --quick ...                  1 round of 3 s runs
# Options: --rounds N, --duration SECONDS, --connections N (8),
#          --threads N (2), --keep (keep the work directory),
#          --no-object-cache (both sides without init's object cache
#          drop-in, to measure what it is worth), -h.
#
# It asserts no speed. Exit status: 0 when everything ran; 1 when something
# is broken (a side would not come up or install, the front page was not
# 200 with the posts on it, wrk reported errors, or cleanup left something
# behind); 2 for a usage mistake.
#
# Only its own objects: stack "benchwp" (10.202.0.0/24, 10.203.0.0/28,
# 127.0.0.1:19154/19155), netns bhbench-wpmono, the cgroups
# bhbench-wpmono-* (one per mono daemon), a mktemp work directory, and the
# lock /run/lock/bhbench-wordpress.lock while it runs. It stops only
# processes it started, by PID, and cleans up on any exit.
set -euo pipefail
started=$(date +%s) me=wordpress.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

STACK=benchwp
PRIVATE_NET=10.202.0.0/24
PUBLIC_NET=10.203.0.0/28
HTTP_PUB=127.0.0.1:19154
HTTPS_PUB=127.0.0.1:19155
OUTSIDE_NS=bh-$STACK-outside
MONO_NS=bhbench-wpmono
MONO_CG=$CG_ROOT/bhbench-wpmono
# The address both sites know themselves by, and the Host wrk sends.
SITE_HOST=$HTTP_PUB
POSTS=10
PAGE=/

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
quick=0 rounds= duration= conns=8 threads=2 data= keep=0 bin= objcache=1
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
	--no-object-cache) objcache=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "wordpress.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
	shift
done
if ((quick)); then
	: "${rounds:=1}" "${duration:=3}"
	warm=0
else
	: "${rounds:=3}" "${duration:=15}"
	warm=2
fi
for v in rounds duration conns threads; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "wordpress.sh: --$v must be a positive integer" >&2; exit 2; }
done
# A front page can take seconds on a shared host under load: wrk waits for
# it (its default timeout, 2 s, would count it as an error and no request).
WRK_ARGS=(-t"$threads" -c"$conns" -d"${duration}s" --timeout 60s --latency -H "Host: $SITE_HOST")

((EUID == 0)) || die "run as root (it creates network namespaces and a bulkhead stack)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
for c in go wrk curl ip ss awk sed flock runc python3; do
	command -v "$c" >/dev/null || die "$c not found (wrk is Debian's wrk)"
done
REPO=$(cd "$(dirname "$0")/.." && pwd)

WORK=$(mktemp -d /tmp/bhbenchwp.XXXXXX)
chmod 755 "$WORK" # www-data and mysql must traverse it to the mono site and datadir
[[ -n $data ]] || data=$WORK/data
mkdir -p "$data"
data=$(cd "$data" && pwd)
BH=${bin:-$WORK/bulkhead}
STACK_FILE=$WORK/stack/bulkhead.yaml
M=$WORK/mono
declare -a MONO_PIDS=() MONO_NAMES=()
have_lock=0 tried=0

cleanup() {
	local rc=$? left
	set +e
	trap - EXIT INT TERM ERR
	if ((have_lock)); then
		((${#MONO_PIDS[@]} == 0)) || log "stopping the monolithic baseline"
		mono_down
		left=$(mono_leftovers)
		if [[ -n $left ]]; then
			printf 'wordpress.sh: cleanup left these behind:\n%s\n' "$left" >&2
			rc=1
		fi
		release_stack || rc=1
	fi
	if ((keep || rc != 0)) && ((have_lock)); then
		echo "wordpress.sh: work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
set -E
trap 'echo "wordpress.sh: line $LINENO: a command failed (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

take_lock wordpress # LOCK; bulkhead up and the mono daemons start with 9>&-
mono_clear_stale
if [[ -z $bin ]]; then
	log "building bulkhead into $BH"
	(cd "$REPO" && go build -o "$BH" ./cmd/bulkhead) || die "go build failed"
fi
[[ -x $BH ]] || die "$BH is not an executable"
remove_stale_stack "$STACK"
ports_free "$HTTP_PUB" "$HTTPS_PUB"

# --- the split stack: bulkhead init --app wordpress -----------------------------

"$BH" init --app wordpress "$WORK/stack" >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; die "bulkhead init --app wordpress failed"; }
# Only the name, the subnets and the published ports change, and the
# monitor is turned off (the monolith has none; bench/monitoring.sh
# measures what it costs); fail closed if init's stack file no longer has
# the lines this replaces.
python3 - "$STACK_FILE" "$STACK" "$PRIVATE_NET" "$PUBLIC_NET" "$HTTP_PUB" "$HTTPS_PUB" <<'EOF' || die "bulkhead init --app wordpress wrote a stack file this script cannot adapt; bench/wordpress.sh needs updating"
import re, sys
f, name, priv, pub, http, https = sys.argv[1:]
s = open(f).read()
for pat, rep in [(r"\nname: wordpress\n", f"\nname: {name}\nnetworks:\n  private: {priv}\n  public: {pub}\n"),
                 (r"http: 127\.0\.0\.1:8080", f"http: {http}"), (r"https: 127\.0\.0\.1:8443", f"https: {https}"),
                 (r"\n  monitor: \{\}", "\n  monitor: off")]:
    s, n = re.subn(pat, rep, s)
    if n != 1:
        sys.exit(f"{pat}: {n} matches")
s = "# Written by bench/wordpress.sh: bulkhead init --app wordpress's stack\n# under the benchmark's own name, subnets and ports.\n" + s
open(f, "w").write(s)
EOF
((objcache)) || rm "$WORK/stack/site/wp-content/object-cache.php"
plan_json "$STACK_FILE" "$WORK/plan.json"

log "bringing the WordPress stack up"
tried=1
t0=$(date +%s.%N)
"$BH" up -f "$STACK_FILE" >&2 9>&- || die "bulkhead up failed"
split_up_s=$(since "$t0")

# --- the monolithic baseline ----------------------------------------------------

log "rendering and starting the monolithic baseline in netns $MONO_NS"
# The sendmail sink must be a file www-data can run.
install -D -m 755 "$BH" "$M/bin/bulkhead"
mono_render "$WORK/plan.json" "$PRIVATE_NET" "$PUBLIC_NET" "$M/bin/bulkhead"
cp -a "$WORK/stack/site" "$M/site"
chown -R www-data:www-data "$M/site/wp-content/uploads"
t0=$(date +%s.%N)
mono_up
mono_up_s=$(since "$t0")

# --- installing WordPress on both sides -----------------------------------------

edge_pub=$(node_addr "$WORK/plan.json" edge public)
[[ $edge_pub =~ ^[0-9.]+$ ]] || die "no public address for the edge in the plan"
[[ -e /run/netns/$OUTSIDE_NS ]] || die "bulkhead up made no namespace $OUTSIDE_NS"
in_outside() { ip netns exec "$OUTSIDE_NS" "$@"; }
declare -A BASE=([split]=http://$edge_pub [mono]=http://127.0.0.1) RUNNER=([split]=in_outside [mono]=in_mono)

# wp SETUP PATH [CURL ARGS...]: a request to SETUP's WordPress as a visitor
# of http://SITE_HOST makes it, with SETUP's cookie jar; prints the body,
# then a last line "HTTP code"
wp() {
	local s=$1 p=$2
	shift 2
	${RUNNER[$s]} curl -sS -m 60 -H "Host: $SITE_HOST" -b "$WORK/jar-$s" -c "$WORK/jar-$s" -w '\nHTTP %{http_code}' "$@" "${BASE[$s]}$p"
}
# expect CODE OUTPUT WHAT: dies unless OUTPUT (of wp) ends in HTTP CODE
expect() { [[ ${2##*$'\n'} == "HTTP $1" ]] || die "$3: want $1, got ${2##*$'\n'}: $(head -c 800 <<<"${2%$'\n'*}")"; }

ADMIN_PASS=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
seed() { # SETUP: the installer, a login, $POSTS posts
	local s=$1 out nonce i
	out=$(wp "$s" '/wp-admin/install.php?step=2' --data-urlencode 'weblog_title=Bulkhead Bench' --data-urlencode user_name=admin \
		--data-urlencode "admin_password=$ADMIN_PASS" --data-urlencode "admin_password2=$ADMIN_PASS" --data-urlencode pw_weak=1 \
		--data-urlencode admin_email=admin@example.com --data-urlencode blog_public=0 --data-urlencode language=)
	expect 200 "$out" "$s: the installer"
	[[ $out == *Success!* ]] || die "$s: the installer did not say Success!: $(head -c 800 <<<"$out")"
	wp "$s" /wp-login.php >/dev/null
	out=$(wp "$s" /wp-login.php --data-urlencode log=admin --data-urlencode "pwd=$ADMIN_PASS" --data-urlencode 'wp-submit=Log In' --data-urlencode testcookie=1)
	expect 302 "$out" "$s: the login"
	out=$(wp "$s" '/wp-admin/admin-ajax.php?action=rest-nonce')
	expect 200 "$out" "$s: the REST nonce"
	nonce=${out%$'\n'*}
	for ((i = 1; i <= POSTS; i++)); do
		out=$(wp "$s" /wp-json/wp/v2/posts -H "X-WP-Nonce: $nonce" -H 'Content-Type: application/json' --data-binary @- <<EOF
{"title": "Benchmark post $i", "status": "publish", "content": "<!-- wp:paragraph --><p>Post $i of bench/wordpress.sh. Every tier in its own node: the edge, the static files, the PHP application, the cache, the database and the storage.</p><!-- /wp:paragraph --><!-- wp:paragraph --><p>A second paragraph, so that the front page has some text to render, as a blog's has.</p><!-- /wp:paragraph -->"}
EOF
		)
		expect 201 "$out" "$s: post $i"
	done
}
declare -A SIZE
check_front() { # SETUP: the front page answers 200 with the newest post on it
	local out
	out=$(wp "$1" "$PAGE" -o "$WORK/front-$1.html")
	[[ $out == *"HTTP 200" ]] || die "$1: GET $PAGE answered ${out##*$'\n'}"
	grep -q "Benchmark post $POSTS" "$WORK/front-$1.html" || die "$1: the front page does not show the newest post: $(head -c 800 "$WORK/front-$1.html")"
	SIZE[$1]=$(stat -c %s "$WORK/front-$1.html")
}
log "installing WordPress and adding $POSTS posts on both sides"
for s in split mono; do
	seed "$s"
	rm -f "$WORK/jar-$s" # wrk is an anonymous visitor
	check_front "$s"
done

# --- CPU accounting ---------------------------------------------------------------

cgmap=$WORK/cgmap
{
	stack_cgroups "$STACK"
	for d in "$MONO_CG"-*; do echo "mono:${d##*/bhbench-wpmono-} $d"; done
} >"$cgmap"
(($(wc -l <"$cgmap") >= 11)) || die "found only these cgroups: $(cat "$cgmap"); want 7 nodes and 4 mono daemons"
awk -v r="$CG_ROOT" '$2 == r {bad = 1} END {exit bad}' "$cgmap" || die "a group runs in the root cgroup; its CPU cannot be told apart: $(cat "$cgmap")"
# The split's sshfs clients (and their ssh), host processes in no node's
# cgroup: their PIDs now, their CPU (their own and their reaped children's)
# in each snapshot.
mapfile -t SSHFS < <(ps -eo pid=,comm=,args= | awk -v k="/var/lib/bulkhead/$STACK/secrets/" '($2 == "sshfs" || $2 == "ssh") && index($0, k) {print $1}')
hz_us=$((1000000 / $(getconf CLK_TCK)))
snap() { # FILE
	{
		cg_snap "$cgmap"
		local p t=0 f
		for p in "${SSHFS[@]}"; do
			f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
			t=$((t + $(awk '{print $12 + $13 + $14 + $15}' <<<"$f")))
		done
		echo "sshfs $((t * hz_us)) 0 0"
	} >"$1"
}
# settle: waits, up to 30 s, until the stack's nodes and the mono's
# daemons together use less than a fifth of a core over a second. A front
# page can take seconds on a loaded host, and the requests wrk leaves in
# flight go on after it stops: without this, one side's backlog would run
# in the other side's measurement.
settle() {
	local i a b
	a=$(cg_snap "$cgmap" | awk '$1 !~ /^host:/ {s += $2} END {print s + 0}')
	for ((i = 0; i < 30; i++)); do
		sleep 1
		b=$(cg_snap "$cgmap" | awk '$1 !~ /^host:/ {s += $2} END {print s + 0}')
		((b - a < 200000)) && return 0
		a=$b
	done
	log "warning: still busy after 30 s of waiting for the servers to go idle"
}
children_cpu() { awk 'NR == 2 {s = 0; for (i = 1; i <= 2; i++) {split($i, a, "m"); s += a[1] * 60 + a[2]} printf "%.0f", s * 1000000}' "$1"; }

# --- running wrk ------------------------------------------------------------------

RESULTS=$data/wordpress.tsv CGROWS=$data/wordpress-cgroups.tsv
printf 'round\tsetup\trps\tp50_ms\tp99_ms\tnon2xx\tsocket_errors\trequests\tstatus\n' >"$RESULTS"
printf 'round\tsetup\trequests\tgroup\tusage_us\tuser_us\tsys_us\n' >"$CGROWS"
bad_runs=0
wrk_on() { local s=$1; shift; ${RUNNER[$s]} wrk "$@" "${BASE[$s]}$PAGE"; }
run_wrk() { # ROUND SETUP
	local r=$1 s=$2 f=$WORK/wrk-$1-$2.txt rc=0 fig w0 w1 status=ok
	((warm == 0)) || wrk_on "$s" -t"$threads" -c"$conns" -d"${warm}s" -H "Host: $SITE_HOST" >/dev/null 2>&1 || true
	settle
	snap "$WORK/cg1"
	times >"$WORK/times0"
	wrk_on "$s" "${WRK_ARGS[@]}" >"$f" 2>&1 || rc=$?
	times >"$WORK/times1"
	settle
	snap "$WORK/cg2"
	fig=$(wrk_figures "$f")
	if ((rc != 0)) || [[ -z $fig ]]; then
		echo "wordpress.sh: wrk failed (exit $rc) on $s:" >&2
		cat "$f" >&2
		bad_runs=$((bad_runs + 1))
		printf '%s\t%s\t-\t-\t-\t-\t-\t0\twrk failed (exit %s)\n' "$r" "$s" "$rc" >>"$RESULTS"
		return
	fi
	read -r rps p50 p99 reqs non2xx sock <<<"$fig"
	if ((non2xx > 0 || sock > 0)); then
		bad_runs=$((bad_runs + 1)) status=errors
		echo "wordpress.sh: $s: $non2xx non-2xx/3xx answers, $sock socket errors" >&2
	fi
	# The servers finish the $conns requests in flight when wrk stopped
	# (settle waited for them): their CPU is in the window, so they count.
	awk -v pre="$r\t$s\t$((reqs + conns))" 'NR == FNR {u[$1] = $2; us[$1] = $3; sy[$1] = $4; next}
		($1 in u) {printf "%s\t%s\t%d\t%d\t%d\n", pre, $1, $2 - u[$1], $3 - us[$1], $4 - sy[$1]}' "$WORK/cg1" "$WORK/cg2" >>"$CGROWS"
	w0=$(children_cpu "$WORK/times0") w1=$(children_cpu "$WORK/times1")
	printf '%s\t%s\t%s\twrk\t%d\t-\t-\n' "$r" "$s" "$((reqs + conns))" "$((w1 - w0))" >>"$CGROWS"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$rps" "$p50" "$p99" "$non2xx" "$sock" "$reqs" "$status" >>"$RESULTS"
	printf '   %-6s %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx/3xx %s  socket errors %s\n' "$s" "$rps" "$p50" "$p99" "$non2xx" "$sock" >&2
}

if ((warm)); then
	log "warming up (5 s a side)"
	for s in split mono; do wrk_on "$s" -t"$threads" -c"$conns" -d5s -H "Host: $SITE_HOST" >/dev/null 2>&1 || die "$s: wrk could not run"; done
fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= rounds; r++)); do
	log "round $r of $rounds: wrk ${WRK_ARGS[*]}"
	if ((r % 2)); then order=(split mono); else order=(mono split); fi
	for s in "${order[@]}"; do run_wrk "$r" "$s"; done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
for s in split mono; do check_front "$s"; done

# --- what the report needs besides the runs -------------------------------------

# What each side's WordPress used: its object cache (WordPress loads
# wp-content/object-cache.php when there is one) and its opcache settings.
conf() { grep -E "^php_admin_(value|flag)\[(opcache|realpath)[^]]*\]" "$1" | sed -E 's/^php_admin_(value|flag)\[([^]]*)\] = /\2=/' | paste -sd' ' -; }
{
	printf 'key\tvalue\n'
	printf 'wrk\twrk %s\n' "${WRK_ARGS[*]}"
	printf 'request\tGET %s (the front page, %s posts)\n' "$PAGE" "$POSTS"
	printf 'rounds\t%s\n' "$rounds"
	printf 'duration_s\t%s\n' "$duration"
	printf 'warm_each_s\t%s\n' "$warm"
	printf 'load_start\t%s\n' "$load_start"
	printf 'load_end\t%s\n' "$load_end"
	printf 'split_up_s\t%s\n' "$split_up_s"
	printf 'mono_up_s\t%s\n' "$mono_up_s"
	printf 'bytes.split\t%s\n' "${SIZE[split]}"
	printf 'bytes.mono\t%s\n' "${SIZE[mono]}"
	printf 'object_cache\t%s\n' "$([[ -e $WORK/stack/site/wp-content/object-cache.php ]] && echo "wp-content/object-cache.php" || echo none)"
	printf 'php.split\t%s\n' "$(conf "/var/lib/bulkhead/$STACK/nodes/app-1/conf/php-fpm.conf")"
	printf 'php.mono\t%s\n' "$(conf "$M/etc/php-fpm.conf")"
	printf 'version.wordpress\t%s\n' "$(dpkg-query -W -f='${Version}' wordpress 2>/dev/null || echo '?')"
	printf 'elapsed_s\t%s\n' "$(($(date +%s) - started))"
} >"$data/wordpress-meta.tsv"

((bad_runs == 0)) || die "$bad_runs wrk run(s) had errors or failed"
log "wordpress done in $(($(date +%s) - started))s; raw results in $data"
