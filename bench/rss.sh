#!/usr/bin/env bash
# Resident memory of a 3-node cluster before and after 500 PUTs of one 1 MiB value (round-robin
# over the nodes, default flags): bench/rss.sh <coordinate binary>. PORT_BASE (default 15000)
# picks ports +1..+3 (clients) and +11..+13 (peers). Every process it starts is stopped by pid.
set -euo pipefail
BIN=$1; D=$(mktemp -d); B=${PORT_BASE:-15000}
C="http://127.0.0.1:$((B+11)),http://127.0.0.1:$((B+12)),http://127.0.0.1:$((B+13))"
pids=()
for i in 1 2 3; do "$BIN" --id $i --cluster $C --port $((B+i)) --data-dir $D/n$i > $D/n$i.log 2>&1 & pids+=($!); done
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait; rm -rf $D' EXIT
head -c 1048576 /dev/urandom > $D/value
for _ in $(seq 100); do curl -sf -XPUT --data-binary @$D/value http://127.0.0.1:$((B+1))/warm >/dev/null && break; sleep 0.1; done
rss() { for p in "${pids[@]}"; do awk '/VmRSS/{printf "%d ", $2/1024}' /proc/$p/status; done; echo; }
echo -n "before: "; rss
for n in $(seq 500); do curl -sf -XPUT --data-binary @$D/value http://127.0.0.1:$((B + 1 + n % 3))/big >/dev/null; done
sleep 2; echo -n "after 500 x 1 MiB: "; rss
