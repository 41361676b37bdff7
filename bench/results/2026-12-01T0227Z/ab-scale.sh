#!/bin/bash
# ab-scale.sh ROUNDS: on a running stack of 100 app nodes, blocks of ROUNDS adds and removals of 10 app nodes, after then before then after then before; the first add of each block (the binary changed) is not counted.
cd /tmp/p100
. /work/main/bench/lib.sh; started=$(date +%s)
SUP=/var/lib/bulkhead/benchcp/supervisor.log
one() { # bin label step replicas round
  sed -i "s/replicas: [0-9]*/replicas: $4/" bulkhead.yaml
  settle 90 60 > /dev/null
  local r0; r0=$(grep -c "sshfs exited; restarting" $SUP)
  head -1 /proc/stat > a0; s=$(date +%s.%N)
  BULKHEAD_DEBUG=1 $1 up -f bulkhead.yaml > ab-scale-$2-$3-$5.log 2>&1; rc=$?
  e=$(date +%s.%N); head -1 /proc/stat > a1
  sleep 3
  local r1; r1=$(grep -c "sshfs exited; restarting" $SUP)
  paste a0 a1 | awk -v b=$2 -v n=$3 -v s=$s -v e=$e -v rc=$rc -v r=$5 -v re=$((r1 - r0)) -v rl="$(grep -o '^  reloaded: .*' ab-scale-$2-$3-$5.log)" '{printf "%s\t%s\tround=%s\trc=%d\twall=%.2f\thost-cpu=%.1f\tmount-retries=%d\t%s\n", b, n, r, rc, e-s, ($13-$2+$15-$4+$19-$8+$20-$9)/100, re, rl}'
}
for blk in 1 2; do
  for b in after before; do
    one /tmp/bh-$b $b warm-add10 110 $blk.0
    one /tmp/bh-$b $b warm-remove10 100 $blk.0
    for r in $(seq $1); do
      one /tmp/bh-$b $b add10 110 $blk.$r
      one /tmp/bh-$b $b remove10 100 $blk.$r
    done
  done
done
