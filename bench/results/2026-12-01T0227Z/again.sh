#!/bin/bash
# again.sh ROUNDS: before/after take turns: converge the stack, then 10 ups with nothing to do, each timed (wall, user+sys CPU).
cd /tmp/kf
for r in $(seq $1); do
  for b in before after; do
    /tmp/bh-$b up -f bulkhead.yaml >/dev/null 2>&1
    for i in $(seq 10); do
      /usr/bin/time -f "$b %e %U %S" -a -o again.tsv /tmp/bh-$b up -f bulkhead.yaml >/dev/null 2>&1
    done
  done
done
