#!/usr/bin/env bash
# Memory of one node (default flags, so default auto-compaction) holding a history:
#   bench/history-rss.sh <coordinate binary> [STREAM_SECONDS]
# 1. preloads 100,000 keys of 128 bytes and prints the RSS;
# 2. overwrites them 100,000 times more (a full default history: 100,000 revisions) and prints
#    the RSS and the node's own byte counts;
# 3. writes for STREAM_SECONDS more (default 180) at 64 connections, printing the RSS every
#    15 s: with auto-compaction on it must stay flat.
# BENCH (default target/release/coordinate-bench) is the load tool; PORT_BASE (default
# 16000) picks the ports. Every process it starts is stopped by its pid.
set -euo pipefail
BIN=$1; STREAM=${2:-180}; BENCH=${BENCH:-target/release/coordinate-bench}
B=${PORT_BASE:-16000}; D=$(mktemp -d)
"$BIN" --id 1 --cluster "http://127.0.0.1:$((B+11))" --port $((B+1)) --data-dir "$D/n1" > "$D/n1.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((B+1))/health" >/dev/null && break; sleep 0.1; done
ep="127.0.0.1:$((B+1))"
rss() { awk '/VmRSS/{printf "%d MiB", $2/1024}' /proc/$pid/status; }
state() { curl -s "http://$ep/v1/status" | jq -c '{keys, data_bytes, total_bytes, revision, compact_revision}' 2>/dev/null || true; }
bench() { "$BENCH" --endpoints "$ep" --keys 100000 --value-size 128 -c 64 "$@" > /dev/null; }
bench --preload --ops 0
echo "after preloading 100000 keys: $(rss) $(state)"
bench --ops 100000
sleep 2
echo "after 100000 overwrites (a full default history): $(rss) $(state)"
bench --duration "${STREAM}s" &
load=$!
for t in $(seq 15 15 "$STREAM"); do
  sleep 15
  echo "streaming, ${t} s: $(rss) $(state)"
done
wait $load
