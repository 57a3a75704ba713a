#!/usr/bin/env bash
# Throughput and latency by key-space size: a fresh 3-node cluster on loopback (fsync on)
# per run, KEYS keys preloaded, then PUTs (or the --workload given) over the same keys for
# DURATION, the snapshots of the whole state included. One JSON line per run:
#
#   {"keys":1000000,"ops":14564,"p50_us":3587,"p99_us":21519,"p999_us":46303,"max_us":87039,"snapshots_on_node_1":9}
#
#   bench/keyspace.sh [coordinate-bench flags...]     e.g. bench/keyspace.sh --target grpc --grpc-conns 3
#   env: KEYS (default "100000 1000000": one run each, in turn), ROUNDS (default 2),
#        BIN (default target/release/coordinate), BENCH (default target/release/coordinate-bench),
#        DURATION (default 60s: long enough for a snapshot of a 1M-key state), NODE_ARGS
#        (extra coordinate flags), CLIENTS (default 64), PORT_BASE (default 16500: clients
#        +1.., peers +51..)
#
# Every process it starts is stopped by pid.
set -euo pipefail
LOG_TAG=keyspace
cd "$(dirname "$0")/.."
source bench/common.sh

KEYS=${KEYS:-100000 1000000}
ROUNDS=${ROUNDS:-2}
BIN=${BIN:-target/release/coordinate}
BENCH=${BENCH:-target/release/coordinate-bench}
DURATION=${DURATION:-60s}
CLIENTS=${CLIENTS:-64}
PORT_BASE=${PORT_BASE:-16500}
[ -x "$BIN" ] && [ -x "$BENCH" ] || die "build first: cargo build --release --bin coordinate --bin coordinate-bench"
WORK=$(mktemp -d /tmp/coordinate-keyspace.XXXXXX)
trap 'stop_started; rm -rf "$WORK"' EXIT

cluster=$(seq -s, -f "http://127.0.0.1:%g" $((PORT_BASE + 51)) $((PORT_BASE + 53)))
endpoints=$(seq -s, -f "127.0.0.1:%g" $((PORT_BASE + 1)) $((PORT_BASE + 3)))
run() {
  local keys=$1 dir
  shift
  dir=$(mktemp -d "$WORK/run.XXXX")
  PIDS=()
  for i in 1 2 3; do
    # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
    "$BIN" --id "$i" --port $((PORT_BASE + i)) --cluster "$cluster" --data-dir "$dir/d$i" \
      --log-level warn ${NODE_ARGS:-} >"$dir/log$i" 2>&1 &
    PIDS+=($!)
  done
  sleep 3
  "$BENCH" --endpoints "$endpoints" --keys "$keys" --preload --duration "$DURATION" -c "$CLIENTS" \
    --no-progress --json "$@" >"$dir/out.json" 2>"$dir/err" || die "coordinate-bench failed: $(tail -3 "$dir/err")"
  local snapshots
  snapshots=$(curl -s "127.0.0.1:$((PORT_BASE + 1))/metrics" | awk '/^coordinate_snapshots_total/ {print $2}')
  stop_started
  jq -c --argjson keys "$keys" --argjson snaps "${snapshots:-0}" '
    (.latency.all // .latency.put // .latency.get) as $l | {keys: $keys, ops: (.ops_per_sec | round),
    p50_us: $l.p50_us, p99_us: $l.p99_us, p999_us: $l.p999_us, max_us: $l.max_us,
    snapshots_on_node_1: $snaps}' "$dir/out.json"
  rm -rf "$dir"
}
for _ in $(seq "$ROUNDS"); do
  for keys in $KEYS; do
    run "$keys" "$@"
  done
done
