#!/usr/bin/env bash
# bench/backup.sh: what `bulkhead backup` and `bulkhead restore` cost by the
# size of a stack's data, next to the raw tools on the same data. Part of
# bench/run, which runs it and turns what it writes into the results; run it
# alone only to work on it.
#
# A stack "benchbk" (the default tiers, 1 app node, the sample site) is
# brought up. For each size S (MB of data: 10, 100 and 1000 by default), the
# stack's data is grown to about S MB, half of it database rows and half of
# it binary uploads:
#   rows      a table bench_rows in the site's database, rows of 4000
#             characters of base64 of random bytes (as compressible as
#             text that is not prose), loaded through `bulkhead exec db`
#   uploads   files of 1 MB of random bytes (as incompressible as images),
#             written by the storage node itself under its uploads
# and then it times, in this order:
#   backup      bulkhead backup -o FILE of the running stack
#   raw-dump    the same dump as the catalog's (mariadb-dump
#               --single-transaction ...) through `bulkhead exec db`, to a file
#   raw-tar     tar --zstd of the storage node's uploads, from the host
#   restore     bulkhead down --purge, then bulkhead restore FILE: the stack
#               up with the archive's data and verified (it fails the run
#               unless it prints "verify: PASS" and every row and upload is
#               back)
#   raw-load    the raw dump loaded with mariadb through `bulkhead exec db`
#               into the restored stack
#   raw-untar   tar --zstd -x of the raw tar into a directory on the host
# The report adds MB/s (the data's bytes: the dump and the uploads) and the
# ratio bulkhead/raw of the times: backup against raw-dump + raw-tar,
# restore against raw-load + raw-untar (restore also brings the stack up
# and verifies it; the raw tools do neither). Issue #13's goals, reported
# against and never asserted: a backup of 100 MB in 10 s or less, a restore
# of 100 MB, stack up and verified, in 30 s or less.
#
# Usage (root, Debian 12, zstd installed):
#   bench/backup.sh --bin BULKHEAD --data DIR [--sizes 10,100,1000]
#   --quick is --sizes 10.
#
# It asserts no speed. Exit status: 0 when everything ran; 1 when something
# is broken (a command failed, the restore did not verify or lost data, or
# cleanup left something behind); 2 for a usage mistake.
#
# Only its own objects: stack "benchbk" (10.226.0.0/24, 10.226.1.0/28,
# 127.0.0.1:19102/19103), a mktemp work directory (which holds the archives
# and raw files: about 1.5 GB at 1000 MB), and the lock
# /run/lock/bhbench-backup.lock while it runs.
set -euo pipefail
started=$(date +%s) me=backup.sh
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

STACK=benchbk
PRIVATE_NET=10.226.0.0/24
PUBLIC_NET=10.226.1.0/28
HTTP_PUB=127.0.0.1:19102
HTTPS_PUB=127.0.0.1:19103

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
sizes=10,100,1000 bin= data=
while (($#)); do
	case $1 in
	--quick) sizes=10 ;;
	--sizes) sizes=${2:?--sizes needs a list}; shift ;;
	--bin) bin=${2:?--bin needs a file}; shift ;;
	--data) data=${2:?--data needs a directory}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "backup.sh: unknown argument $1 (see -h)" >&2; exit 2 ;;
	esac
	shift
done
[[ $sizes =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "backup.sh: --sizes takes numbers of MB like 10,100" >&2; exit 2; }
[[ -n $bin && -n $data ]] || { echo "backup.sh: --bin and --data are required (see -h)" >&2; exit 2; }
IFS=, read -r -a SIZES <<<"$sizes"

((EUID == 0)) || die "run as root"
export PATH="$PATH:/usr/sbin:/sbin"
command -v zstd >/dev/null || die "zstd not found (tar --zstd needs it): apt-get install zstd"
BH=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[[ -x $BH ]] || die "$BH is not an executable"
mkdir -p "$data"
WORK=$(mktemp -d /tmp/bhbenchbk.XXXXXX)
STACK_FILE=$WORK/stack/bulkhead.yaml
have_lock=0 tried=0

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	release_stack || rc=1
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

take_lock backup
remove_stale_stack "$STACK"
ports_free "$HTTP_PUB" "$HTTPS_PUB"

"$BH" init "$WORK/stack" >/dev/null
write_stack "$STACK_FILE" 1
plan_json "$STACK_FILE" "$WORK/plan.json"
DB=$(jsonq "$WORK/plan.json" 'j["site"]["db_name"]')
UPLOADS=$(jsonq "$WORK/plan.json" 'j["site"]["writable"][0]')
# Where the storage node keeps the site's writable paths, as the node sees
# them and as the host does (the node's disk image, mounted by up).
NODE_SITE=/var/lib/bulkhead/site
HOST_SITE=/var/lib/bulkhead/$STACK/nodes/storage/vol/data/site
MYCNF=--defaults-file=/etc/bulkhead/my.cnf

TIMES=$data/backup.tsv
printf 'size_mb\top\tseconds\tdata_bytes\tout_bytes\texit\n' >"$TIMES"
broken=0
fail() { broken=1; echo "backup.sh: $*" >&2; }

# timed SIZE OP DATA-BYTES OUT-FILE CMD...: run CMD (its output to OUT's
# log), record the wall time, the data's bytes and OUT-FILE's size
timed() {
	local s=$1 op=$2 bytes=$3 outf=$4 t0 rc=0 secs outb=-
	shift 4
	t0=$(date +%s.%N)
	"$@" >"$WORK/$op.log" 2>&1 || rc=$?
	secs=$(since "$t0" 2)
	[[ -z $outf || ! -e $outf ]] || outb=$(du -sb "$outf" | cut -f1)
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$op" "$secs" "$bytes" "$outb" "$rc" >>"$TIMES"
	log "size=${s}MB $op: ${secs}s, exit $rc"
	if ((rc != 0)); then
		fail "$op failed (exit $rc): $*"
		tail -n 30 "$WORK/$op.log" >&2
	fi
	return "$rc"
}
bh_exec() { "$BH" exec "$1" -f "$STACK_FILE" -- "${@:2}"; }
sql() { bh_exec db mariadb "$MYCNF" -N -B "$DB" -e "$1"; }

# rows FROM TO: INSERTs of bench_rows FROM..TO-1, 50 rows a statement
rows() {
	python3 - "$1" "$2" <<'EOF'
import base64, os, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout
for start in range(lo, hi, 50):
    vals = ",".join("(%d,'%s')" % (i, base64.b64encode(os.urandom(3000)).decode()) for i in range(start, min(start + 50, hi)))
    out.write("INSERT INTO bench_rows VALUES %s;\n" % vals)
EOF
}

# counts: "ROWS FILES" as the stack holds them now
counts() {
	local r f
	r=$(sql 'SELECT COUNT(*) FROM bench_rows') || return 1
	f=$(bh_exec storage sh -c "ls $NODE_SITE/$UPLOADS/bench | wc -l") || return 1
	echo "$r $f"
}

tried=1
log "bulkhead up (stack $STACK)"
"$BH" up -f "$STACK_FILE" >"$WORK/up.log" 2>&1 || { tail -n 30 "$WORK/up.log" >&2; die "bulkhead up failed"; }
sql 'CREATE TABLE bench_rows (id INT PRIMARY KEY, body TEXT NOT NULL) ENGINE=InnoDB' || die "could not create bench_rows"
bh_exec storage mkdir -p "$NODE_SITE/$UPLOADS/bench" || die "could not make the uploads' bench directory"

have_rows=0 have_files=0
for s in "${SIZES[@]}"; do
	# Half the size in rows of about 4 KB, half in files of 1 MB.
	want_rows=$((s * 125)) want_files=$(((s + 1) / 2))
	log "size=${s}MB: growing the data to $want_rows rows and $want_files files"
	if ((want_rows > have_rows)); then
		rows "$have_rows" "$want_rows" | bh_exec db mariadb "$MYCNF" "$DB" || { fail "loading rows failed"; break; }
		have_rows=$want_rows
	fi
	if ((want_files > have_files)); then
		bh_exec storage sh -c "i=$have_files; while [ \$i -lt $want_files ]; do head -c 1000000 /dev/urandom >$NODE_SITE/$UPLOADS/bench/f\$i.bin; i=\$((i + 1)); done" ||
			{ fail "writing uploads failed"; break; }
		have_files=$want_files
	fi

	archive=$WORK/benchbk-$s.tar.zst raw=$WORK/raw-$s
	rm -f "$WORK"/benchbk-*.tar.zst
	rm -rf "$WORK"/raw-*
	mkdir -p "$raw"
	timed "$s" raw-dump - "$raw/dump.sql" bash -c "\"\$0\" exec db -f \"\$1\" -- mariadb-dump $MYCNF --single-transaction --routines --triggers --events $DB >\"\$2\"" "$BH" "$STACK_FILE" "$raw/dump.sql" || break
	timed "$s" raw-tar - "$raw/uploads.tar.zst" tar --zstd -cf "$raw/uploads.tar.zst" -C "$HOST_SITE" "$UPLOADS" || break
	# The data's bytes, for every op of this size: the dump and the
	# uploads, as the raw tools read them.
	bytes=$(($(stat -c %s "$raw/dump.sql") + $(du -sb "$HOST_SITE/$UPLOADS" | cut -f1)))
	timed "$s" backup "$bytes" "$archive" "$BH" backup -f "$STACK_FILE" -o "$archive" || break

	before=$(counts) || { fail "could not count the data"; break; }
	log "bulkhead down --purge"
	"$BH" down --purge -f "$STACK_FILE" >"$WORK/down.log" 2>&1 || { tail -n 30 "$WORK/down.log" >&2; fail "down --purge failed"; break; }
	timed "$s" restore "$bytes" - "$BH" restore "$archive" -f "$STACK_FILE" || break
	grep -q 'verify: PASS' "$WORK/restore.log" || { fail "the restore did not verify:"; tail -n 30 "$WORK/restore.log" >&2; break; }
	after=$(counts) || { fail "could not count the restored data"; break; }
	[[ $after == "$before" ]] || { fail "the restore holds $after rows and files, the backup $before"; break; }
	timed "$s" raw-load "$bytes" - bash -c "\"\$0\" exec db -f \"\$1\" -- mariadb $MYCNF $DB <\"\$2\"" "$BH" "$STACK_FILE" "$raw/dump.sql" || break
	mkdir -p "$raw/untar"
	timed "$s" raw-untar "$bytes" - tar --zstd -xf "$raw/uploads.tar.zst" -C "$raw/untar" || break
done
printf 'key\tvalue\nsizes_mb\t%s\nstack\t%s\nrows\t%s\nfiles\t%s\nelapsed_s\t%s\n' "$sizes" "$STACK" \
	"bench_rows, 4000-character base64 of random bytes a row" "1000000 random bytes a file" \
	"$(($(date +%s) - started))" >"$data/backup-meta.tsv"
((broken == 0)) || die "something failed; see above"
log "backup done in $(($(date +%s) - started))s"
