#!/usr/bin/env bash
# Alternating pairs: two builds of `coordinate`, A and B, each as a fresh 3-node cluster on
# loopback (fsync on), the same coordinate-bench load (PUT, then linearizable GET, at 64
# connections over 100,000 preloaded keys), A then B, ROUNDS times; one line of JSON per run.
#
#   bench/pairs.sh OLD_BINARY NEW_BINARY [ROUNDS]      (default 3 rounds)
#   env: DURATION (s, default 15), WARMUP (s, default 3), KEYS (default 100000),
#        BENCH (the load tool, default target/release/coordinate-bench), OUT (results file),
#        BENCH_ARGS (more load flags for every run, e.g. "--target grpc --grpc-conns 3")
#
# Used for "no performance regression" claims in BENCHMARKS.md: only the server differs
# between the two halves of a pair, and alternating spreads slow drifts of the machine over
# both. Every process it starts is stopped by its pid.
set -euo pipefail
LOG_TAG=pairs
cd "$(dirname "$0")/.."
source bench/common.sh

A=${1:?usage: bench/pairs.sh OLD_BINARY NEW_BINARY [ROUNDS]}
B=${2:?usage: bench/pairs.sh OLD_BINARY NEW_BINARY [ROUNDS]}
ROUNDS=${3:-3}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-100000}
BENCH=${BENCH:-target/release/coordinate-bench}
read -r -a BENCH_ARGS <<<"${BENCH_ARGS:-}"
WORK=$(mktemp -d /tmp/coordinate-pairs.XXXXXX)
OUT=${OUT:-$WORK/results.jsonl}
# Below the kernel's ephemeral range (32768-60999 by default): a client port there can be
# taken by an outgoing connection, even one connected to itself, and a node then cannot bind.
PORT_BASE=${PORT_BASE:-27000}
trap 'stop_started; rm -rf "$WORK/data"' EXIT
[ -x "$BENCH" ] || die "no load tool at $BENCH (cargo build --release)"
command -v jq >/dev/null || install_missing jq:jq

cluster="http://127.0.0.1:$((PORT_BASE + 11)),http://127.0.0.1:$((PORT_BASE + 12)),http://127.0.0.1:$((PORT_BASE + 13))"
endpoints="127.0.0.1:$((PORT_BASE + 1)),127.0.0.1:$((PORT_BASE + 2)),127.0.0.1:$((PORT_BASE + 3))"

# run_cluster BINARY LABEL ROUND — one fresh cluster, preload, PUT and GET runs.
run_cluster() {
  local bin=$1 label=$2 round=$3 i
  PIDS=()
  rm -rf "$WORK/data"
  for i in 1 2 3; do
    mkdir -p "$WORK/data/$i"
    "$bin" --id "$i" --cluster "$cluster" --port $((PORT_BASE + i)) --data-dir "$WORK/data/$i" \
      --log-level warn >"$WORK/$label-$round-$i.log" 2>&1 &
    PIDS+=($!)
  done
  # Every node must be up and see a leader: a run against two nodes measures nothing.
  for i in 1 2 3; do
    for _ in $(seq 200); do
      curl -sf --max-time 1 "http://127.0.0.1:$((PORT_BASE + i))/v1/status" | jq -e '.leader > 0' >/dev/null 2>&1 && break
      kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null || die "node $i of $label exited: $(cat "$WORK/$label-$round-$i.log")"
      sleep 0.1
    done
  done
  "$BENCH" --endpoints "$endpoints" --connections 64 --keys "$KEYS" --preload --ops 0 --no-progress --json \
    "${BENCH_ARGS[@]}" >/dev/null
  for wl in put get; do
    "$BENCH" --endpoints "$endpoints" --connections 64 --keys "$KEYS" --workload "$wl" \
      --duration "$DURATION" --warmup "$WARMUP" --seed "$round" --no-progress --json "${BENCH_ARGS[@]}" |
      jq -c --arg build "$label" --argjson round "$round" --arg wl "$wl" \
        '{build: $build, round: $round, workload: $wl, ops_per_sec: .ops_per_sec, p50_us: .latency[$wl].p50_us, p99_us: .latency[$wl].p99_us, errors: .error_total}' |
      tee -a "$OUT"
    [ "$(tail -1 "$OUT" | jq .errors)" = 0 ] || die "$label round $round: $wl had errors; the run is void"
  done
  stop_started
  PIDS=()
}

log "A=$A B=$B rounds=$ROUNDS duration=${DURATION}s, results in $OUT"
for round in $(seq "$ROUNDS"); do
  run_cluster "$A" A "$round"
  run_cluster "$B" B "$round"
done
jq -rs 'group_by(.workload)[] | . as $runs | ($runs[0].workload) as $w |
  "\($w): A " + ([$runs[] | select(.build == "A") | .ops_per_sec | floor | tostring] | join(" / ")) +
  "  B " + ([$runs[] | select(.build == "B") | .ops_per_sec | floor | tostring] | join(" / "))' "$OUT"
