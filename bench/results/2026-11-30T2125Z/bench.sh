#!/usr/bin/env bash
# usage: bench.sh LABEL BIN N OUT.tsv  -- up (cold) then down --purge, timed
set -uo pipefail
label=$1 bin=$2 n=$3 out=$4
W=/tmp/cpdown/stack-$n
rm -rf "$W"; "$bin" init "$W" >/dev/null
cat >"$W/bulkhead.yaml" <<EOT
name: benchcp
networks:
  private: 10.241.0.0/24
  public: 10.241.1.0/28
publish:
  http: 127.0.0.1:19090
  https: 127.0.0.1:19091
tiers:
  edge: {}
  static: {}
  cache: {}
  db: {}
  storage: {}
  app:
    replicas: $n
EOT
[[ -s $out ]] || printf 'label\tapps\top\twall_s\tuser_s\tsys_s\texit\tload1\n' >"$out"
for op in up down; do
  args=(up -f "$W/bulkhead.yaml"); [[ $op == down ]] && args=(down --purge -f "$W/bulkhead.yaml")
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f '%e %U %S' -o /tmp/cpdown/t.$$ env BULKHEAD_DEBUG=1 "$bin" "${args[@]}" >/tmp/cpdown/$label-$n-$op.log 2>&1; rc=$?
  read -r e u s </tmp/cpdown/t.$$
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$op" "$e" "$u" "$s" "$rc" "$load" >>"$out"
  echo "$label n=$n $op wall=$e user=$u sys=$s rc=$rc load=$load"
  ((rc == 0)) || break
done
