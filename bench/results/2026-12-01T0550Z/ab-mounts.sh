#!/bin/bash
# A/B: cold up of a 9-node stack (4 app nodes), old (243d38d) vs new (9459dce, nosymfollow site mounts), alternating.
# ./old/bulkhead and ./new/bulkhead are builds of those commits; site/ beside it is the sample site.
cd "$(dirname "$0")"
for i in 1 2 3; do
  for v in old new; do
    s=$(date +%s.%N)
    ./$v/bulkhead up -f ab-mounts.yaml > up-$v-$i.log 2>&1 || { echo "up $v $i failed"; tail -5 up-$v-$i.log; }
    e=$(date +%s.%N)
    cp /var/lib/bulkhead/abmnt/supervisor.log sup-$v-$i.log
    ./$v/bulkhead down -f ab-mounts.yaml --purge > down-$v-$i.log 2>&1 || { echo "down $v $i failed"; tail -5 down-$v-$i.log; }
    echo "$v $i $(echo "$e - $s" | bc)"
  done
done
