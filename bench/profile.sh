#!/usr/bin/env bash
# Profiles a 3-node coordinate cluster under load: starts the cluster on loopback, pre-loads the
# key space, drives it with coordinate-bench and, during the run,
#   1. measures the CPU of every node and of the load tool, split by thread (/proc),
#   2. summarizes the leader's system calls with `perf trace -s` (count and time of fdatasync,
#      write, futex... per thread),
#   3. samples the leader with `perf record` (DWARF call graphs),
# then prints the top of the profile: by activity (snapshot, fsync, apply, HTTP...: see
# bench/classify-stacks.awk), by thread, by shared object, by function (self), and inclusive. Writes a flamegraph too when inferno (`cargo install inferno`) is installed.
#
# Needs perf (`apt-get install linux-perf`, installed if missing) and root or a permissive
# kernel.perf_event_paranoid. Settings, from the environment:
#
#   WORKLOAD=put CONNECTIONS=64  the load (READ_MODE=linearizable applies to get and mixed)
#   KEYS=100000 VALUE_SIZE=100-256
#   WARMUP=3 CPU_SECONDS=5 TRACE_SECONDS=4 RECORD_SECONDS=8   phases, in seconds (the load
#                                lasts all of them)
#   FREQ=499                     perf sampling frequency (Hz)
#   COORDINATE_BIN=path          a prebuilt server instead of building this tree
#   NODE_ARGS="..."              extra flags for every node (e.g. "--snapshot-count 100000")
#   BENCH_ARGS="..."             extra flags for the load (e.g. "--target grpc --grpc-conns 8")
#   PORT_BASE=15000              client ports +1..+3, peer ports +11..+13
#   OUT_DIR=dir                  where perf.data, the reports and the logs go
#                                [default: a new directory under /tmp, kept]
#
# Every process this script starts is stopped by pid on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKLOAD=${WORKLOAD:-put}
READ_MODE=${READ_MODE:-linearizable}
CONNECTIONS=${CONNECTIONS:-64}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-100-256}
WARMUP=${WARMUP:-3}
CPU_SECONDS=${CPU_SECONDS:-5}
TRACE_SECONDS=${TRACE_SECONDS:-4}
RECORD_SECONDS=${RECORD_SECONDS:-8}
FREQ=${FREQ:-499}
COORDINATE_BIN=${COORDINATE_BIN:-}
NODE_ARGS=${NODE_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
PORT_BASE=${PORT_BASE:-15000}

LOG_TAG=profile
# shellcheck source=bench/common.sh
. bench/common.sh
install_missing perf:linux-perf curl:curl jq:jq

WORK=$(mktemp -d "${TMPDIR:-/tmp}/coordinate-profile.XXXXXX")
OUT_DIR=${OUT_DIR:-$WORK}
mkdir -p "$OUT_DIR" "$WORK/bin"
cleanup() {
  local rc=$?
  stop_started
  rm -rf "$WORK"/coordinate-? "$WORK/bin"
  log "results in $OUT_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_binaries

for off in 1 2 3 11 12 13; do
  port_free $((PORT_BASE + off)) || die "port $((PORT_BASE + off)) is in use; set PORT_BASE"
done
BACKGROUND=$(machine_busy 2)
log "CPU busy before starting (other load on this machine): $BACKGROUND%"

CLUSTER="http://127.0.0.1:$((PORT_BASE + 11)),http://127.0.0.1:$((PORT_BASE + 12)),http://127.0.0.1:$((PORT_BASE + 13))"
ENDPOINTS="127.0.0.1:$((PORT_BASE + 1)),127.0.0.1:$((PORT_BASE + 2)),127.0.0.1:$((PORT_BASE + 3))"
declare -A PID
for i in 1 2 3; do
  # shellcheck disable=SC2086 # NODE_ARGS is a list of flags
  "$WORK/bin/coordinate" --id "$i" --cluster "$CLUSTER" --port $((PORT_BASE + i)) \
    --data-dir "$WORK/coordinate-$i" --log-level warn $NODE_ARGS >"$OUT_DIR/coordinate-$i.log" 2>&1 &
  PID[$i]=$!
  PIDS+=($!)
done
leader() { curl -sf --max-time 2 "http://127.0.0.1:$((PORT_BASE + 1))/v1/status" | jq -e '.leader' 2>/dev/null; }
LEADER=0
for _ in $(seq 300); do
  LEADER=$(leader || echo 0)
  [ "$LEADER" -gt 0 ] && break
  for i in 1 2 3; do kill -0 "${PID[$i]}" 2>/dev/null || die "node $i exited; see $OUT_DIR/coordinate-$i.log"; done
  sleep 0.1
done
[ "$LEADER" -gt 0 ] || die "no leader within 30 s"
LPID=${PID[$LEADER]}
log "leader is node $LEADER (pid $LPID)"

log "pre-loading $KEYS keys"
"$BENCH" --endpoints "$ENDPOINTS" --connections 64 --keys "$KEYS" --value-size "$VALUE_SIZE" \
  --preload --ops 0 --no-progress >"$OUT_DIR/preload.txt"

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags (below)
TOTAL=$((WARMUP + CPU_SECONDS + TRACE_SECONDS + RECORD_SECONDS + 2))
log "load: $WORKLOAD at $CONNECTIONS connections for ${TOTAL}s"
"$BENCH" --endpoints "$ENDPOINTS" --connections "$CONNECTIONS" --keys "$KEYS" \
  --value-size "$VALUE_SIZE" --workload "$WORKLOAD" --read-mode "$READ_MODE" \
  --duration "${TOTAL}s" --no-progress $BENCH_ARGS >"$OUT_DIR/load.txt" &
LOAD=$!
PIDS+=("$LOAD")
sleep "$WARMUP"

log "CPU by thread for ${CPU_SECONDS}s"
roles=()
for i in 1 2 3; do
  if [ "$i" = "$LEADER" ]; then roles+=("node$i-leader=${PID[$i]}"); else roles+=("node$i=${PID[$i]}"); fi
done
cpu_by_thread "$CPU_SECONDS" "${roles[@]}" "bench=$LOAD" >"$OUT_DIR/cpu.txt"

log "system calls of the leader for ${TRACE_SECONDS}s"
timeout $((TRACE_SECONDS + 10)) perf trace -s -p "$LPID" -- sleep "$TRACE_SECONDS" \
  >"$OUT_DIR/syscalls.txt" 2>&1 || log "perf trace failed (see $OUT_DIR/syscalls.txt); skipped"

log "perf record of the leader for ${RECORD_SECONDS}s"
perf record -F "$FREQ" --call-graph dwarf,32768 -p "$LPID" -o "$OUT_DIR/perf.data" \
  -- sleep "$RECORD_SECONDS" 2>"$OUT_DIR/perf-record.txt" ||
  die "perf record failed: $(cat "$OUT_DIR/perf-record.txt")"
wait "$LOAD" || true

report() { perf report -i "$OUT_DIR/perf.data" --stdio "$@" 2>/dev/null; }
report --no-children --sort comm --percent-limit 0.5 -g none >"$OUT_DIR/by-thread.txt"
report --no-children --sort dso --percent-limit 0.5 -g none >"$OUT_DIR/by-dso.txt"
report --no-children --sort sym --percent-limit 0.3 -g none >"$OUT_DIR/self.txt"
report --children --sort sym --percent-limit 1 -g none >"$OUT_DIR/inclusive.txt"
report --no-children --sort comm,sym --percent-limit 0.5 -g caller,0.5,callee --max-stack 40 >"$OUT_DIR/callgraph.txt"
perf script -i "$OUT_DIR/perf.data" -F comm,tid,ip,sym 2>/dev/null |
  awk -f bench/classify-stacks.awk >"$OUT_DIR/activities.txt"
if command -v inferno-collapse-perf >/dev/null 2>&1 && command -v inferno-flamegraph >/dev/null 2>&1; then
  perf script -i "$OUT_DIR/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT_DIR/stacks.folded"
  inferno-flamegraph <"$OUT_DIR/stacks.folded" >"$OUT_DIR/flamegraph.svg"
  log "flamegraph: $OUT_DIR/flamegraph.svg"
fi

show() { echo "== $1"; grep -v '^#' "$OUT_DIR/$2" | grep -v '^$' | head -"$3"; echo; }
{
  echo "== load (other CPU load before the run: $BACKGROUND%)"
  cat "$OUT_DIR/load.txt"
  echo
  echo "== CPU by process/thread over ${CPU_SECONDS}s (1.00 = one core)"
  cat "$OUT_DIR/cpu.txt"
  echo
  echo "== leader's system calls over ${TRACE_SECONDS}s (perf trace -s)"
  grep -v '^$' "$OUT_DIR/syscalls.txt" | head -60
  echo
  echo "== leader: CPU samples by activity (bench/classify-stacks.awk)"
  cat "$OUT_DIR/activities.txt"
  echo
  show "leader: samples by thread" by-thread.txt 12
  show "leader: samples by shared object" by-dso.txt 12
  show "leader: hottest functions (self)" self.txt 40
  show "leader: inclusive (children), inlined frames included" inclusive.txt 80
} | tee "$OUT_DIR/summary.txt"
