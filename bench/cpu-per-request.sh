#!/usr/bin/env bash
# CPU per request: a fresh coordinate cluster of NODES nodes on loopback (fsync on), one
# coordinate-bench run against it, and the CPU the nodes and the load tool used per request
# over a window in the middle of the run (from /proc/<pid>/stat). One line per run:
#
#   ops/s 22972  nodes 1.34 cores 58.2 us/req  bench 0.32 cores 14.1 us/req
#
#   bench/cpu-per-request.sh [coordinate-bench flags...]
#     e.g. bench/cpu-per-request.sh --target grpc --grpc-conns 3 -c 64 --workload get
#   env: NODES (1 or more, default 3), BIN (the coordinate binary, default
#        target/release/coordinate), BENCH (default target/release/coordinate-bench),
#        DURATION (default 12s; the window is 5 s starting 4 s in), KEYS (default 10000),
#        VALUE_SIZE (default 128), PORT_BASE (default 15500: clients +1.., peers +51..)
#
# Every process it starts is stopped by pid.
set -euo pipefail
LOG_TAG=cpu-per-request
cd "$(dirname "$0")/.."
source bench/common.sh

NODES=${NODES:-3}
BIN=${BIN:-target/release/coordinate}
BENCH=${BENCH:-target/release/coordinate-bench}
DURATION=${DURATION:-12s}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-128}
PORT_BASE=${PORT_BASE:-15500}
[ -x "$BIN" ] && [ -x "$BENCH" ] || die "build first: cargo build --release --bin coordinate --bin coordinate-bench"
WORK=$(mktemp -d /tmp/coordinate-cpu.XXXXXX)
trap 'stop_started; rm -rf "$WORK"' EXIT

cluster=$(seq -s, -f "http://127.0.0.1:%g" $((PORT_BASE + 51)) $((PORT_BASE + 50 + NODES)))
endpoints=$(seq -s, -f "127.0.0.1:%g" $((PORT_BASE + 1)) $((PORT_BASE + NODES)))
nodes=()
for i in $(seq "$NODES"); do
  "$BIN" --id "$i" --port $((PORT_BASE + i)) --cluster "$cluster" --data-dir "$WORK/d$i" \
    --log-level warn >"$WORK/log$i" 2>&1 &
  PIDS+=($!)
  nodes+=($!)
done
sleep 3
"$BENCH" --endpoints "$endpoints" --keys "$KEYS" --value-size "$VALUE_SIZE" \
  --duration "$DURATION" --no-progress --json "$@" >"$WORK/out.json" 2>"$WORK/err" &
bench=$!
PIDS+=("$bench")
sleep 4
n0=$(cpu_ticks "${nodes[@]}")
b0=$(cpu_ticks "$bench")
sleep 5
n1=$(cpu_ticks "${nodes[@]}")
b1=$(cpu_ticks "$bench")
wait "$bench" || die "coordinate-bench failed: $(tail -3 "$WORK/err")"
hz=$(getconf CLK_TCK)
jq -r --argjson n $((n1 - n0)) --argjson b $((b1 - b0)) --argjson hz "$hz" '
  def r(x; d): (x * d | round) / d;
  .ops_per_sec as $ops
  | "ops/s \($ops | round)  nodes \(r($n / $hz / 5; 100)) cores \(r($n / $hz / 5 / $ops * 1e6; 10)) us/req  bench \(r($b / $hz / 5; 100)) cores \(r($b / $hz / 5 / $ops * 1e6; 10)) us/req  errors \(.error_total)"' \
  "$WORK/out.json"
