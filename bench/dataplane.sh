#!/usr/bin/env bash
# bench/dataplane.sh: what the split costs a visitor.
#
# Measures the default bulkhead stack (edge nginx -> static lighttpd / app x2
# apache2+php-fpm -> memcached, mariadb; site over sshfs from storage) against
# a monolithic baseline: the same daemons and the same site in ONE network
# namespace, with no edge and no containers. Both run on this host in the
# same invocation, in interleaved rounds, with the same wrk parameters.
#
#   split   wrk on the host -> 127.0.0.1:19080 (bulkhead's TCP forwarder in
#           `bulkhead supervise`) -> edge -> static or app-1/app-2 -> ...
#   mono    wrk inside netns bhbench-mono -> 127.0.0.1:80 apache2 (static
#           files itself, PHP via proxy_fcgi to php-fpm's unix socket),
#           memcached and mariadb on 127.0.0.1 in the same namespace
#   direct  (full mode only; a diagnostic, not part of the ratio) wrk on the
#           host -> the edge's public address over the stack's bridge, which
#           skips the forwarder
#
# The mono configs are bulkhead's own rendered app-1/db/cache configs
# (`bulkhead plan --render`) with paths and addresses adapted, so both sides
# run the same apache MPM, php-fpm pool, mariadb and memcached settings.
#
# Usage (root, Debian 12, wrk installed):
#   bench/dataplane.sh            full run: 3 rounds of 10 s runs, writes
#                                 bench/results/dataplane-<date>.md
#   bench/dataplane.sh --quick    1 round of 3 s runs (for CI); prints the
#                                 results, writes them only with --out
# Options: --rounds N, --duration SECONDS, --connections N, --threads N,
#          --out FILE, --keep (keep the work directory), -h.
#
# It asserts no speed. Exit status: 0 when everything ran; 1 when something
# is broken (build, stack or baseline would not come up, a page was not 200,
# wrk reported errors or failed, or cleanup left something behind); 2 for a
# usage mistake.
#
# Only its own objects: stack "bench" (10.240.0.0/24, 10.240.1.0/28,
# 127.0.0.1:19080/19081), netns bhbench-mono, a mktemp work directory, and
# the lock /run/lock/bhbench-dataplane.lock while it runs. It stops only
# processes it started, by PID, and cleans up on any exit; a stack "bench" or
# an empty netns bhbench-mono left by a run that was killed is removed first.
set -euo pipefail

STACK=bench
PRIVATE_NET=10.240.0.0/24
PUBLIC_NET=10.240.1.0/28
HTTP_PUB=127.0.0.1:19080
HTTPS_PUB=127.0.0.1:19081
MONO_NS=bhbench-mono
PATHS=(/ /assets/style.css)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

orig_args=$*
quick=0 rounds= duration= conns=32 threads=2 out= keep=0
while (($#)); do
	case $1 in
	--quick) quick=1 ;;
	--rounds) rounds=${2:?--rounds needs a number}; shift ;;
	--duration) duration=${2:?--duration needs seconds}; shift ;;
	--connections) conns=${2:?--connections needs a number}; shift ;;
	--threads) threads=${2:?--threads needs a number}; shift ;;
	--out) out=${2:?--out needs a file}; shift ;;
	--keep) keep=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "dataplane.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
	shift
done
if ((quick)); then
	: "${rounds:=1}" "${duration:=3}"
	warm_first=1 warm_each=1 direct=0
else
	: "${rounds:=3}" "${duration:=10}"
	warm_first=5 warm_each=2 direct=1
fi
for v in rounds duration conns threads; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "dataplane.sh: --$v must be a positive integer" >&2; exit 2; }
done
WRK_ARGS=(-t"$threads" -c"$conns" -d"${duration}s" --latency)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'dataplane.sh: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "run as root (it creates network namespaces and a bulkhead stack)"
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
for c in go wrk curl ip ss awk sed flock; do
	command -v "$c" >/dev/null || die "$c not found (wrk is Debian's wrk)"
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
started=$(date +%s)
stamp=$(date -u +%Y-%m-%dT%H%MZ)
if [[ -z $out ]] && ((!quick)); then
	out=$REPO/bench/results/dataplane-$stamp.md
fi

WORK=$(mktemp -d /tmp/bhbench.XXXXXX)
chmod 755 "$WORK" # www-data and mysql must traverse it to the mono site and datadir
BH=$WORK/bulkhead
STACK_DIR=$WORK/stack
STACK_FILE=$STACK_DIR/bulkhead.yaml
M=$WORK/mono
declare -a MONO_PIDS=() MONO_NAMES=()
stack_up_tried=0 have_lock=0

# --- cleanup, on every exit ------------------------------------------------

# is_running PID: alive and not a zombie waiting to be reaped
is_running() { local st; st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [[ ${st%% *} != Z ]]; }

stop_pid() { # NAME PID: TERM, wait up to 20 s, then KILL; only our own children
	local name=$1 pid=$2 i
	is_running "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 200; i++)); do
		is_running "$pid" || break
		sleep 0.1
	done
	if is_running "$pid"; then
		echo "dataplane.sh: $name (pid $pid) ignored SIGTERM for 20 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

leftovers() { # prints what this script's objects left on the host
	ip netns list 2>/dev/null | awk -v s="bh-$STACK-" -v m="$MONO_NS" 'index($1, s) == 1 || $1 == m {print "netns " $1}'
	runc list 2>/dev/null | awk -v s="bh-$STACK-" 'index($1, s) == 1 {print "container " $1}'
	ip -o link show 2>/dev/null | awk -F': ' -v s="$STACK-" '{sub(/@.*/, "", $2)} index($2, s) == 1 {print "link " $2}'
	awk -v s="/var/lib/bulkhead/$STACK/" -v w="$WORK/" -v m="/run/netns/$MONO_NS" \
		'index($2, s) == 1 || index($2, w) == 1 || $2 == m {print "mount " $2}' /proc/mounts
	[[ ! -e /var/lib/bulkhead/$STACK ]] || echo "directory /var/lib/bulkhead/$STACK"
	local p args
	for p in /proc/[0-9]*; do
		args=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		case $args in
		*"supervise --stack $STACK "* | *"$M/"* | *"$BH "*) echo "process ${p#/proc/}: $args" ;;
		esac
	done
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
	if ((stack_up_tried)) && [[ -e /var/lib/bulkhead/$STACK ]]; then
		log "bulkhead down --purge (stack $STACK)"
		"$BH" down --purge -f "$STACK_FILE" >&2 || {
			echo "dataplane.sh: bulkhead down failed" >&2
			rc=1
		}
	fi
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
trap cleanup EXIT
set -E # say where an unexpected failure happened, even inside a function
trap 'echo "dataplane.sh: line $LINENO: a command failed (exit $?)" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight ---------------------------------------------------------------

# One run at a time on this host, whichever checkout it comes from: the
# stack name, namespace and ports are fixed.
LOCK=/run/lock/bhbench-dataplane.lock
mkdir -p /run/lock
exec 9>>"$LOCK"
flock -n 9 || die "another bench/dataplane.sh is running on this host (it holds $LOCK)"
have_lock=1

# The stack name, namespace and ports are this script's own: a stack or
# namespace left by an earlier run that was killed is removed first.
if [[ -e /var/lib/bulkhead/$STACK ]]; then
	log "removing stack $STACK left by an earlier run"
fi
if [[ -e /run/netns/$MONO_NS ]]; then
	stale=$(ip netns pids "$MONO_NS" 2>/dev/null || true)
	[[ -z $stale ]] || die "netns $MONO_NS exists with processes in it ($stale): an earlier run is still going, or left them; stop them, then: ip netns del $MONO_NS"
	ip netns del "$MONO_NS"
fi

log "building bulkhead into $BH"
(cd "$REPO" && go build -o "$BH" ./cmd/bulkhead) || die "go build failed"
if [[ -e /var/lib/bulkhead/$STACK ]]; then
	"$BH" down --purge --stack "$STACK" >&2 || die "could not remove the stale stack $STACK"
fi
for hp in "$HTTP_PUB" "$HTTPS_PUB"; do
	if ss -Hltn "sport = :${hp##*:}" | grep -q .; then
		die "port ${hp##*:} is taken on this host: $(ss -Hltnp "sport = :${hp##*:}")"
	fi
done

# --- the split stack -------------------------------------------------------

"$BH" init "$STACK_DIR" >/dev/null
cat >"$STACK_FILE" <<EOF
# Written by bench/dataplane.sh: the default stack under the benchmark's
# own name, subnets and ports.
name: $STACK
networks:
  private: $PRIVATE_NET
  public: $PUBLIC_NET
publish:
  http: $HTTP_PUB
  https: $HTTPS_PUB
EOF
"$BH" plan -f "$STACK_FILE" --render "$WORK/render" >"$WORK/plan.txt" 2>&1 || { cat "$WORK/plan.txt" >&2; die "bulkhead plan failed"; }

log "bringing the split stack up"
stack_up_tried=1
t0=$(date +%s.%N)
"$BH" up -f "$STACK_FILE" >&2 || die "bulkhead up failed"
split_up_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
# bulkhead up installed the daemons the baseline runs too.
for c in runc mariadb-install-db mariadbd memcached php-fpm8.2 apache2; do
	command -v "$c" >/dev/null || die "$c not found after bulkhead up"
done

# --- the monolithic baseline ------------------------------------------------
#
# Adapted copies of the rendered configs. Anything still naming a node path
# or a stack address after the substitutions means the renderer changed in a
# way this script does not know: fail rather than compare different setups.

R=$WORK/render
priv_prefix=${PRIVATE_NET%.*}.             # 10.240.0.
priv_re=${priv_prefix//./\\.}[0-9]{1,3}    # 10\.240\.0\.[0-9]{1,3}
for f in app-1/apache2.conf app-1/php-fpm.conf db/my.cnf db/secrets/mariadb-init.sql cache/services.json; do
	[[ -s $R/$f ]] || die "bulkhead plan --render wrote no $f; bench/dataplane.sh needs updating"
done
mkdir -p "$M"/{etc,log,run/app/php-tmp,run/db,mysql,secrets}
cp -a "$STACK_DIR/site" "$M/site"
chown -R www-data:www-data "$M/site/uploads"
chmod 1733 "$M/run/app/php-tmp"
chown mysql:mysql "$M/run/db" "$M/mysql"

check_adapted() { # FILE: no node path or stack address may survive
	local bad
	bad=$(grep -nE "/(etc|run|srv|var/log|var/lib)/bulkhead|/srv/site|$priv_re|${PUBLIC_NET%.*}\." "$1" || true)
	[[ -z $bad ]] || die "$(basename "$1") still names the split's paths or addresses after adapting it; bench/dataplane.sh needs updating:
$bad"
}

# apache2: app-1's config; listens on 127.0.0.1:80 and serves the static files
# itself (FallbackResource only sends what is not a file to index.php).
sed -E \
	-e "s#/etc/bulkhead#$M/etc#g; s#/run/bulkhead#$M/run/app#g; s#/var/log/bulkhead#$M/log#g; s#/srv/site#$M/site#g" \
	-e "s#^Listen .*#Listen 127.0.0.1:80#; s#$priv_re#127.0.0.1#g" \
	-e 's#"app-1"#"mono"#g' \
	"$R/app-1/apache2.conf" >"$M/etc/apache2.conf"
cat >>"$M/etc/apache2.conf" <<'EOF'

# Added by bench/dataplane.sh: the static node's caching header (lighttpd's
# expire.url), so the static responses match.
<LocationMatch "^/(assets|uploads)/">
    Header set Cache-Control "max-age=3600"
</LocationMatch>
EOF
check_adapted "$M/etc/apache2.conf"

# php-fpm: app-1's pool, env block and all; addresses become 127.0.0.1.
sed -E \
	-e "s#/etc/bulkhead/secrets#$M/secrets#g; s#/run/bulkhead#$M/run/app#g; s#/var/log/bulkhead#$M/log#g; s#/srv/site#$M/site#g" \
	-e "s#$priv_re#127.0.0.1#g" \
	-e 's#^env\[NODE_NAME\] = .*#env[NODE_NAME] = "mono"#' \
	"$R/app-1/php-fpm.conf" >"$M/etc/php-fpm.conf"
check_adapted "$M/etc/php-fpm.conf"
grep -q '^env\[DB_HOST\] = "127.0.0.1"' "$M/etc/php-fpm.conf" || die "php-fpm.conf: no env[DB_HOST] to adapt; bench/dataplane.sh needs updating"
fpm_env() { sed -nE "s/^env\[$1\] = \"?([^\"]*)\"?$/\1/p" "$M/etc/php-fpm.conf"; }
db_name=$(fpm_env DB_NAME) db_user=$(fpm_env DB_USER) pw_file=$(fpm_env DB_PASSWORD_FILE)
[[ -n $db_name && -n $db_user && $pw_file == "$M/secrets/"* ]] || die "php-fpm.conf: DB_NAME, DB_USER or DB_PASSWORD_FILE missing; bench/dataplane.sh needs updating"
db_pw=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
printf '%s' "$db_pw" >"$pw_file"
chown root:www-data "$pw_file"
chmod 640 "$pw_file"

# mariadb: db's my.cnf; the init file is ours (one user at 127.0.0.1), with
# the privileges the rendered one grants.
sed -E \
	-e "s#/etc/bulkhead/secrets/mariadb-init.sql#$M/secrets/mariadb-init.sql#g; s#/var/lib/bulkhead/mysql#$M/mysql#g; s#/run/bulkhead#$M/run/db#g" \
	-e "s#^bind-address *=.*#bind-address = 127.0.0.1#" \
	"$R/db/my.cnf" >"$M/etc/my.cnf"
check_adapted "$M/etc/my.cnf"
grants=$(sed -nE "s/^GRANT (.*) ON .* TO .*/\1/p" "$R/db/secrets/mariadb-init.sql" | head -n1)
[[ -n $grants ]] || die "mariadb-init.sql: no GRANT line; bench/dataplane.sh needs updating"
cat >"$M/secrets/mariadb-init.sql" <<EOF
CREATE DATABASE IF NOT EXISTS \`$db_name\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$db_user'@'127.0.0.1' IDENTIFIED BY '$db_pw';
ALTER USER '$db_user'@'127.0.0.1' IDENTIFIED BY '$db_pw';
GRANT $grants ON \`$db_name\`.* TO '$db_user'@'127.0.0.1';
EOF
chown root:mysql "$M/secrets/mariadb-init.sql"
chmod 640 "$M/secrets/mariadb-init.sql"

# memcached: cache's argv, listening on 127.0.0.1.
mapfile -t mc_argv < <(awk '/"argv"/ {f = 1; next} f && /\]/ {exit} f {gsub(/^[ \t]*"|",?[ \t]*$/, ""); print}' "$R/cache/services.json")
[[ ${mc_argv[0]:-} == memcached ]] || die "cache/services.json: no memcached argv; bench/dataplane.sh needs updating"
for ((i = 1; i < ${#mc_argv[@]}; i++)); do
	[[ ${mc_argv[i - 1]} != -l ]] || mc_argv[i]=127.0.0.1
done

ip netns add "$MONO_NS"
ip -n "$MONO_NS" link set lo up
in_mono() { ip netns exec "$MONO_NS" "$@"; }

start_mono() { # NAME LOG CMD...: start in the background in the namespace, record the PID
	local name=$1 logf=$2
	shift 2
	# ip execs the daemon, so $! is the daemon's PID.
	ip netns exec "$MONO_NS" "$@" >>"$logf" 2>&1 </dev/null &
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
start_mono memcached "$M/log/memcached.log" "${mc_argv[@]}"
wait_ready memcached "${MONO_PIDS[-1]}" 10 tcp_open 127.0.0.1 11211
mariadb-install-db --defaults-file="$M/etc/my.cnf" --auth-root-authentication-method=socket --skip-test-db \
	>"$M/log/mariadb-install-db.log" 2>&1 || { tail -n 20 "$M/log/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
start_mono mariadb "$M/log/mariadb.log" mariadbd --defaults-file="$M/etc/my.cnf"
wait_ready mariadb "${MONO_PIDS[-1]}" 60 tcp_open 127.0.0.1 3306
start_mono php-fpm "$M/log/php-fpm.log" php-fpm8.2 -F -y "$M/etc/php-fpm.conf"
wait_ready php-fpm "${MONO_PIDS[-1]}" 20 test -S "$M/run/app/php-fpm.sock"
start_mono apache2 "$M/log/apache2.log" apache2 -f "$M/etc/apache2.conf" -DFOREGROUND
wait_ready apache2 "${MONO_PIDS[-1]}" 20 tcp_open 127.0.0.1 80
mono_up_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')

# --- targets ------------------------------------------------------------------

# setup -> how to run a command next to its server, and its base URL
declare -A BASE RUNNER
BASE[split]=http://$HTTP_PUB RUNNER[split]=
BASE[mono]=http://127.0.0.1 RUNNER[mono]=in_mono
SETUPS=(split mono)
direct_note=
if ((direct)); then
	# The edge's row in plan's NODES table: NAME ROLE SOFTWARE PRIVATE PUBLIC ...
	edge_pub=$(awk '/^NODES/ {f = 1; next} /^$/ {f = 0} f && $1 == "edge" {print $5; exit}' "$WORK/plan.txt")
	# Fail closed: only if the host routes that address into the stack's own
	# bridge, never out of the default route.
	if [[ $edge_pub =~ ^[0-9.]+$ ]] && ip -o route get "$edge_pub" 2>/dev/null | grep -q " dev $STACK-pub "; then
		BASE[direct]=http://$edge_pub RUNNER[direct]=
		SETUPS+=(direct)
	else
		direct_note="skipped: could not confirm that ${edge_pub:-the public address of the edge} routes into bridge $STACK-pub"
	fi
fi

fetch() { # SETUP PATH [CURL ARGS...]: prints "code size"
	local s=$1 p=$2
	shift 2
	${RUNNER[$s]} curl -sS -m 10 -o /dev/null -w '%{http_code} %{size_download}' "$@" "${BASE[$s]}$p"
}

# Three posts on each side, made the way a visitor makes them, so that / is
# the real thing (a list read through memcached), and the same on both.
seed_posts() {
	local s=$1 jar=$WORK/jar-$1 page=$WORK/page-$1.html tok n code
	${RUNNER[$s]} curl -sS -m 10 -c "$jar" -o "$page" "${BASE[$s]}/" || die "$s: GET / failed"
	tok=$(sed -nE 's/.*name="csrf" value="([0-9a-f]+)".*/\1/p' "$page" | head -n1)
	[[ -n $tok ]] || die "$s: no CSRF token in / (is the app answering?): $(head -c 300 "$page")"
	for n in 1 2 3; do
		code=$(${RUNNER[$s]} curl -sS -m 10 -b "$jar" -o /dev/null -w '%{http_code}' \
			-F "csrf=$tok" -F "title=Benchmark post $n" \
			-F "body=Post $n of 3, written by bench/dataplane.sh so that the page lists something." \
			"${BASE[$s]}/posts")
		[[ $code == 303 ]] || die "$s: POST /posts answered $code, not 303"
	done
}
seed_posts split
seed_posts mono

declare -A SIZE
check_200() {
	local s p r
	for s in "${SETUPS[@]}"; do
		for p in "${PATHS[@]}"; do
			r=$(fetch "$s" "$p") || die "$s: GET $p failed"
			[[ ${r%% *} == 200 ]] || die "$s: GET $p answered ${r%% *}, not 200"
			SIZE[$s$p]=${r#* }
		done
	done
}
check_200

# --- CPU accounting -------------------------------------------------------------
#
# Per-process CPU time from /proc, before and after each run, attributed to
# the node whose network namespace the process is in (sshfs, the host-side
# FUSE client, is counted apart), to the forwarder, or for mono to the
# daemon. Children that came and went are counted through their parent's
# cutime/cstime. wrk's own time comes from the shell's children times.

declare -A NSLABEL
for n in $(ip netns list | awk '{print $1}'); do
	case $n in
	"bh-$STACK-"*) NSLABEL[$(stat -L -c %i "/run/netns/$n")]=${n#"bh-$STACK-"} ;;
	"$MONO_NS") NSLABEL[$(stat -L -c %i "/run/netns/$n")]=mono ;;
	esac
done
fwd_pid=
for p in /proc/[0-9]*; do
	args=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
	[[ $args == *" supervise --stack $STACK "* ]] && fwd_pid=${p#/proc/}
done
[[ -n $fwd_pid ]] || log "warning: no 'bulkhead supervise --stack $STACK' process found; the forwarder's CPU is not counted"
nsmap=$WORK/nsmap
for k in "${!NSLABEL[@]}"; do echo "ns $k ${NSLABEL[$k]}"; done >"$nsmap"
[[ -z $fwd_pid ]] || echo "pid $fwd_pid forwarder" >>"$nsmap"

cpu_snap() { # FILE: "pid label ticks" for every process of ours, then "host busy total"
	{
		# Processes come and go while these run: their errors mean nothing.
		stat -c '%n %N' /proc/[0-9]*/ns/net 2>/dev/null | awk '{print "nsof", $1, $NF}' || true
		cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^/stat /' || true
	} | awk -v mapf="$nsmap" '
		BEGIN { while ((getline l < mapf) > 0) { split(l, a, " "); if (a[1] == "ns") ns[a[2]] = a[3]; else pidl[a[2]] = a[3] } }
		$1 == "nsof" { if ($NF !~ /net:\[/) next; split($2, p, "/"); ino = $NF; gsub(/[^0-9]/, "", ino); nsof[p[3]] = ino; next }
		$1 == "stat" {
			pid = $2; line = substr($0, 6)
			comm = line; sub(/^[0-9]+ \(/, "", comm); sub(/\) [^)]*$/, "", comm)
			rest = line; sub(/^.*\) /, "", rest); n = split(rest, f, " ")
			t = f[12] + f[13] + f[14] + f[15]
			if (pid in pidl) {
				# The supervisor: its own threads (the forwarder, and its
				# once-a-second repair loop), apart from the children it
				# reaps (runc).
				print pid, pidl[pid], f[12] + f[13]
				print pid "c", "supervise:children", f[14] + f[15]
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

RESULTS=$WORK/results.tsv # round setup path rps p50 p99 non2xx sockerr reqs cpu
: >"$RESULTS"
bad_runs=0

# diagnose ROUND SETUP PATH: right after a run with errors, what the server
# answers now and what its logs say, for the results.
DIAG=$WORK/diagnostics.md
: >"$DIAG"
diagnose() {
	local r=$1 s=$2 p=$3 i
	{
		printf '\n### round %s, %s, `%s`\n\n' "$r" "$s" "$p"
		printf 'Status codes of 20 requests made right after the run (code, served by: count):\n\n```\n'
		for ((i = 0; i < 20; i++)); do
			${RUNNER[$s]} curl -sS -m 5 -o /dev/null -D - "${BASE[$s]}$p" 2>&1 |
				awk 'NR == 1 {c = $2} tolower($1) == "x-served-by:" {b = $2} END {sub(/\r$/, "", b); print (c == "" ? "no answer" : c) ", " (b == "" ? "-" : b)}'
		done | sort | uniq -c
		printf '```\n'
		if [[ $s == mono ]]; then
			printf '\nLast lines of the baseline'"'"'s error logs:\n\n```\n'
			tail -n 15 "$M/log/apache2-error.log" "$M/log/php-fpm.log" 2>&1
			printf '```\n'
		else
			printf '\n`bulkhead status`, and the last log lines (access logs left out) of the edge and the %s nodes:\n\n```\n' \
				"$([[ $p == /assets/* ]] && echo static || echo app)"
			"$BH" status -f "$STACK_FILE" 2>&1
			local n nodes=(edge app-1 app-2)
			[[ $p != /assets/* ]] || nodes=(edge static)
			for n in "${nodes[@]}"; do
				echo "-- $n"
				"$BH" logs "$n" -n 200 --file "$STACK_FILE" 2>&1 | grep -vE '^[a-z0-9-]*access: ' | tail -n 12
			done
			printf '```\n'
		fi
	} >>"$DIAG"
}

to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u); if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000; printf "%.2f", n }'; }

run_wrk() { # ROUND SETUP PATH
	local r=$1 s=$2 p=$3 f=$WORK/wrk-$1-$2-${3//\//_}.txt snap1=$WORK/cpu1 snap2=$WORK/cpu2
	local c0 c1 rc=0 rps p50 p99 non2xx sock reqs wrkcpu cpu
	if ((warm_each)); then
		${RUNNER[$s]} wrk -t"$threads" -c"$conns" -d"${warm_each}s" "${BASE[$s]}$p" >/dev/null 2>&1 || true
	fi
	cpu_snap >"$snap1"
	times >"$WORK/times0"
	${RUNNER[$s]} wrk "${WRK_ARGS[@]}" "${BASE[$s]}$p" >"$f" 2>&1 || rc=$?
	times >"$WORK/times1"
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
		echo "dataplane.sh: wrk failed (exit $rc) on $s $p:" >&2
		cat "$f" >&2
		bad_runs=$((bad_runs + 1))
		printf '%s\t%s\t%s\t-\t-\t-\t-\twrk failed (exit %s)\t0\t%s\n' "$r" "$s" "$p" "$rc" "$cpu" >>"$RESULTS"
		diagnose "$r" "$s" "$p"
		return
	fi
	if ((non2xx > 0)) || [[ -n $sock ]]; then
		bad_runs=$((bad_runs + 1))
		diagnose "$r" "$s" "$p"
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$p" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" \
		"$non2xx" "${sock:-0}" "$reqs" "$cpu" >>"$RESULTS"
	printf '   %-6s %-18s %10s req/s  p50 %8s ms  p99 %8s ms  non-2xx/3xx %s  socket errors %s\n' \
		"$s" "$p" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" "$non2xx" "${sock:-0}" >&2
}

log "warming up (${warm_first}s per setup and path)"
for s in "${SETUPS[@]}"; do
	for p in "${PATHS[@]}"; do
		${RUNNER[$s]} wrk -t"$threads" -c"$conns" -d"${warm_first}s" "${BASE[$s]}$p" >/dev/null 2>&1 || die "$s: wrk could not run against ${BASE[$s]}$p"
	done
done

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= rounds; r++)); do
	log "round $r of $rounds: wrk ${WRK_ARGS[*]}"
	for p in "${PATHS[@]}"; do
		for s in "${SETUPS[@]}"; do
			run_wrk "$r" "$s" "$p"
		done
	done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
check_200 # still answering after the load

# --- the report ---------------------------------------------------------------

ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
git_rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
[[ -z $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]] || git_rev="$git_rev (with uncommitted changes)"
pool=$(grep -E '^pm(\.[a-z_]+)? *=' "$M/etc/php-fpm.conf" | sed -E 's/ *= */=/' | paste -sd' ' -)
mpm=$(grep -E '^(ThreadsPerChild|MaxRequestWorkers|ServerLimit) ' "$M/etc/apache2.conf" | paste -sd' ' -)
elapsed=$(($(date +%s) - started))
cmdline="bench/dataplane.sh${orig_args:+ $orig_args}"

report() {
	local mode
	mode=$( ((quick)) && echo quick || echo full)
	cat <<EOF
# bulkhead data plane: split stack vs. monolithic baseline

- command: \`$cmdline\` (as root, from the repository's root)
- when: $(date -u '+%Y-%m-%d %H:%M UTC'), bulkhead $git_rev, mode $mode ($rounds round(s)), $elapsed s in all
- wrk: \`wrk ${WRK_ARGS[*]}\`, ${warm_each}s warm-up before every run (${warm_first}s per setup and path before the first round); runs interleaved split, mono$( ((direct)) && echo ", direct") for each path in each round
- host: $(nproc) CPUs, $(uname -r), load average $load_start at the first run, $load_end after the last; this machine is shared with CI, so compare figures within a round
- versions: nginx $(ver nginx), lighttpd $(ver lighttpd), apache2 $(ver apache2), php-fpm $(ver php8.2-fpm), mariadb $(ver mariadb-server), memcached $(ver memcached), wrk $(ver wrk)
- up: split stack ${split_up_s}s (\`bulkhead up\`), baseline ${mono_up_s}s
- response sizes (bytes, body): / split ${SIZE[split/]}, mono ${SIZE[mono/]}; /assets/style.css split ${SIZE[split/assets/style.css]}, mono ${SIZE[mono/assets/style.css]}

## Setups

- **split**: the default stack \`$STACK\` (edge nginx; static lighttpd; app-1, app-2 apache2 + php-fpm; memcached; mariadb; storage sshd, site mounted over sshfs). wrk runs on the host against http://$HTTP_PUB, bulkhead's userspace TCP forwarder, which connects to the edge over the stack's public bridge.
- **mono**: apache2 + php-fpm8.2 + mariadb + memcached in ONE network namespace ($MONO_NS, loopback only), no edge, no containers, the site from a local copy. wrk runs inside that namespace against http://127.0.0.1/. Apache serves the css itself and hands PHP to php-fpm over a unix socket; memcached and mariadb are on 127.0.0.1.
EOF
	if ((direct)); then
		if [[ -n ${BASE[direct]:-} ]]; then
			echo "- **direct** (diagnostic, not in the ratio): the split stack again, but wrk on the host against the edge's public address ${BASE[direct]} over bridge $STACK-pub, skipping the forwarder: split minus direct is what the forwarder costs."
		else
			echo "- **direct**: $direct_note"
		fi
	fi
	cat <<EOF
- Same tuning on both sides: the mono configs are bulkhead's rendered app-1 apache2.conf and php-fpm.conf, db my.cnf and cache memcached flags with paths and addresses adapted (apache: $mpm, KeepAlive as rendered; php-fpm pool: $pool). Where they necessarily differ: the split has TWO app nodes, so twice the php-fpm workers and apache threads of the mono; the split's nodes have cgroup memory/pids limits; the split reads the site over sshfs (FUSE) and the mono from local disk; the split's edge adds its security headers; the split's client goes through one extra userspace hop (the forwarder) that the mono's does not.

## Results

| round | setup | path | req/s | p50 ms | p99 ms | non-2xx/3xx | socket errors | requests | check |
|---:|---|---|---:|---:|---:|---:|---|---:|---|
EOF
	awk -F'\t' '{
		ok = ($7 == "0" && $8 == "0") ? "ok" : "**ERRORS**"
		if ($4 == "-") ok = "**FAILED**"
		printf "| %s | %s | `%s` | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, ok
	}' "$RESULTS"
	cat <<EOF

## Split / mono, req/s (same round)

A ratio of 0.80 means the split served 80% of the baseline's requests per second.$([[ -n ${BASE[direct]:-} ]] && echo " The direct columns are the same split stack reached without the forwarder (diagnostic).")

EOF
	local has_direct=0
	[[ -z ${BASE[direct]:-} ]] || has_direct=1
	awk -F'\t' -v d="$has_direct" '
		{ v[$1, $2, $3] = $4; if ($1 > n) n = $1 }
		function ratio(r, s, p,  a, b) { a = v[r, s, p]; b = v[r, "mono", p]; return (a == "" || a == "-" || b == "" || b == "-" || b == 0) ? "-" : sprintf("%.2f", a / b) }
		function median(s, p,  r, k, x, a, i, j, t) {
			k = 0
			for (r = 1; r <= n; r++) { x = ratio(r, s, p); if (x != "-") a[++k] = x + 0 }
			if (k == 0) return "-"
			for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
			return sprintf("%.2f", k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2)
		}
		function row(label, r,  line) {
			if (r == "median") line = sprintf("| %s | %s | %s |", label, median("split", "/"), median("split", "/assets/style.css"))
			else line = sprintf("| %s | %s | %s |", label, ratio(r, "split", "/"), ratio(r, "split", "/assets/style.css"))
			if (d && r == "median") line = line sprintf(" %s | %s |", median("direct", "/"), median("direct", "/assets/style.css"))
			else if (d) line = line sprintf(" %s | %s |", ratio(r, "direct", "/"), ratio(r, "direct", "/assets/style.css"))
			print line
		}
		END {
			if (d) { print "| round | split/mono `/` | split/mono `/assets/style.css` | direct/mono `/` | direct/mono `/assets/style.css` |"; print "|---:|---:|---:|---:|---:|" }
			else { print "| round | split/mono `/` (dynamic) | split/mono `/assets/style.css` (static) |"; print "|---:|---:|---:|" }
			for (r = 1; r <= n; r++) row(r, r)
			if (n > 1) row("median", "median")
		}' "$RESULTS"
	cat <<EOF

## CPU during each run

In % of one core over the run (the host has $((100 * $(nproc)))%), from /proc: per node for the split (every process in the node's network namespace; \`app-1:sshfs\` is the host-side sshfs client that mounts the site for app-1), per daemon for the mono; \`wrk\` is the load generator. \`forwarder\` is the stack's \`bulkhead supervise\` process itself (the published port's TCP forwarder, plus its once-a-second repair loop), and \`supervise:children\` the processes it runs and reaps (such as \`runc\`). The split stack stays up, idle, during the mono runs, so whatever it spends while idle appears in those rows too. "elsewhere" is what the host spent outside all these: other jobs on this machine, and kernel work (softirqs) not charged to a process.

| round | setup | path | CPU by process group | host busy | elsewhere |
|---:|---|---|---|---:|---:|
EOF
	awk -F'\t' '{ split($10, c, " \\| "); printf "| %s | %s | `%s` | %s | %s | %s |\n", $1, $2, $3, c[1], c[2], c[3] }' "$RESULTS"
	if ((bad_runs)); then
		printf '\n**%d run(s) had errors or failed (flagged above): a visitor would have seen those errors; read the diagnostics below before trusting their figures.**\n' "$bad_runs"
		printf '\n## Diagnostics for the flagged runs\n'
		cat "$DIAG"
	fi
}

report_text=$(report)
printf '%s\n' "$report_text"
if [[ -n $out ]]; then
	mkdir -p "$(dirname "$out")"
	printf '%s\n' "$report_text" >"$out"
	log "results written to $out"
fi
if ((bad_runs)); then
	die "$bad_runs wrk run(s) had errors or failed; see the results"
fi
log "done in $(($(date +%s) - started))s"
