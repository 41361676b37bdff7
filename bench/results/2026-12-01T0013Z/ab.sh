#!/bin/bash
# ab.sh ROUNDS: before/after binaries take turns: cold up of 100 app nodes, then 10 added, then down --purge.
cd /tmp/p100
one() { # bin label step replicas
  sed -i "s/replicas: [0-9]*/replicas: $4/" bulkhead.yaml
  head -1 /proc/stat > a0; s=$(date +%s.%N)
  $1 up -f bulkhead.yaml > ab-$2-$3.log 2>&1; rc=$?
  e=$(date +%s.%N); head -1 /proc/stat > a1
  paste a0 a1 | awk -v b=$2 -v n=$3 -v s=$s -v e=$e -v rc=$rc '{printf "%s\t%s\trc=%d\twall=%.1f\thost-cpu=%.1f\n", b, n, rc, e-s, ($13-$2+$15-$4+$19-$8+$20-$9)/100}'
}
for r in $(seq $1); do
  for b in before after; do
    one /tmp/bh-$b $b cold 100
    sleep 15
    one /tmp/bh-$b $b add10 110
    /tmp/bh-$b down --purge -f bulkhead.yaml > /dev/null 2>&1 || echo "down failed"
  done
done
