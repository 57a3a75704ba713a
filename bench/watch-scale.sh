#!/usr/bin/env bash
# Watchers at scale: one coordinate node (a fresh data dir per scenario), PUTs from
# coordinate-bench through etcd's gRPC API while it holds N gRPC watchers of every key over M
# watch streams (one HTTP/2 connection), each watcher checking that it receives every revision
# of the run, once, in order (tools/bench/src/watchers.rs). One JSON line per scenario, then a
# Markdown table on stdout.
#
#   bench/watch-scale.sh COORDINATE_BINARY
#   env: DURATION (default 20s), RATE (writes/s of the paced scenarios, default 2000),
#        CONNS (writers, default 16), BENCH (default target/release/coordinate-bench),
#        PORT_BASE (default 27200), SCENARIOS (default: see below), OUT (results file)
#
# A scenario is RATE:WATCHERS:STREAMS, RATE "max" meaning unpaced. Peak memory is the node's
# VmHWM. Every process it starts is stopped by pid.
set -euo pipefail
LOG_TAG=watch-scale
cd "$(dirname "$0")/.."
source bench/common.sh

BIN=${1:?usage: bench/watch-scale.sh COORDINATE_BINARY}
DURATION=${DURATION:-20s}
RATE=${RATE:-2000}
CONNS=${CONNS:-16}
BENCH=${BENCH:-target/release/coordinate-bench}
PORT_BASE=${PORT_BASE:-27200}
SCENARIOS=${SCENARIOS:-"$RATE:0:1 $RATE:1000:10 $RATE:1000:1000 max:0:1 max:100:10 max:1000:10"}
WORK=$(mktemp -d /tmp/coordinate-watch-scale.XXXXXX)
OUT=${OUT:-$WORK/results.jsonl}
trap 'stop_started; rm -rf "$WORK/data"' EXIT
[ -x "$BENCH" ] || die "no load tool at $BENCH (cargo build --release)"
command -v jq >/dev/null || install_missing jq:jq

port=$((PORT_BASE + 1))
for scenario in $SCENARIOS; do
  IFS=: read -r rate watchers streams <<<"$scenario"
  PIDS=()
  rm -rf "$WORK/data"
  "$BIN" --port "$port" --cluster "http://127.0.0.1:$((PORT_BASE + 11))" \
    --data-dir "$WORK/data" --max-watchers 2000 --log-level warn >"$WORK/node.log" 2>&1 &
  node=$!
  PIDS+=("$node")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  flags=(--target grpc --endpoints "127.0.0.1:$port" --connections "$CONNS" --grpc-conns 1
    --keys 10000 --workload put --duration "$DURATION" --no-progress --json)
  [ "$rate" = max ] || flags+=(--rate "$rate")
  [ "$watchers" = 0 ] || flags+=(--watchers "$watchers" --watch-streams "$streams")
  log "rate $rate, $watchers watchers over $streams streams"
  result=$("$BENCH" "${flags[@]}")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$node/status")
  stop_started
  echo "$result" | jq -c --arg rate "$rate" --argjson w "$watchers" --argjson s "$streams" \
    --argjson hwm "$hwm" '{rate: $rate, watchers: $w, streams: $s, hwm_kb: $hwm,
      ops_per_sec, p50_us: .latency.put.p50_us, p99_us: .latency.put.p99_us, errors: .error_total,
      watch}' | tee -a "$OUT" >&2
done

echo "| writes/s asked | watchers / streams | PUT ops/s | PUT p50 / p99 | watchers complete | events received | missing | out of order | cut off | drain | node peak RSS |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
jq -r 'def ms: ((. / 10 | round) / 100 | tostring) + " ms";
  "| \(.rate) | \(.watchers) / \(.streams) | \(.ops_per_sec | round) | \(.p50_us | ms) / \(.p99_us | ms) | " +
  (if .watch then "\(.watch.complete) of \(.watch.watchers) | \(.watch.events) | \(.watch.missing) | \(.watch.out_of_order) | \(.watch.cut_off) | \(.watch.drain_seconds) s"
   else "– | – | – | – | – | –" end) +
  " | \(.hwm_kb / 1024 | round) MiB |"' "$OUT"
