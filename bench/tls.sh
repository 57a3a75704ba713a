#!/usr/bin/env bash
# The cost of TLS on both ports: one build of `coordinate`, as a fresh 3-node cluster on
# loopback, alternately plain and with TLS on both ports — peer mTLS and HTTPS on the client
# port (certificates from `coordinatectl certs`, client certificates required) — the same
# coordinate-bench load (PUT,
# then linearizable GET, 64 keep-alive connections over 100,000 preloaded keys), ROUNDS times;
# one line of JSON per run.
#
#   bench/tls.sh COORDINATE_BINARY [ROUNDS]      (default 3 rounds)
#   env: DURATION (s, default 15), WARMUP (s, default 3), KEYS (default 100000),
#        BENCH (default target/release/coordinate-bench), CTL (default
#        target/release/coordinatectl), OUT (results file), PORT_BASE (default 27100)
#
# Each connection does one handshake and keeps its connection for the whole run, as clients
# do; what is measured is the record layer's cost. Every process it starts is stopped by pid.
set -euo pipefail
LOG_TAG=tls
cd "$(dirname "$0")/.."
source bench/common.sh

BIN=${1:?usage: bench/tls.sh COORDINATE_BINARY [ROUNDS]}
ROUNDS=${2:-3}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
KEYS=${KEYS:-100000}
BENCH=${BENCH:-target/release/coordinate-bench}
CTL=${CTL:-target/release/coordinatectl}
WORK=$(mktemp -d /tmp/coordinate-tls.XXXXXX)
OUT=${OUT:-$WORK/results.jsonl}
# Below the kernel's ephemeral range (see bench/pairs.sh).
PORT_BASE=${PORT_BASE:-27100}
trap 'stop_started; rm -rf "$WORK/data"' EXIT
[ -x "$BENCH" ] || die "no load tool at $BENCH (cargo build --release)"
[ -x "$CTL" ] || die "no coordinatectl at $CTL (cargo build --release)"
command -v jq >/dev/null || install_missing jq:jq

peers="127.0.0.1:$((PORT_BASE + 11)),127.0.0.1:$((PORT_BASE + 12)),127.0.0.1:$((PORT_BASE + 13))"
plain_cluster=$(echo "$peers" | sed 's|^|http://|; s|,|,http://|g')
tls_cluster=$(echo "$peers" | sed 's|^|https://|; s|,|,https://|g')
endpoints="127.0.0.1:$((PORT_BASE + 1)),127.0.0.1:$((PORT_BASE + 2)),127.0.0.1:$((PORT_BASE + 3))"
"$CTL" certs "$WORK/certs" --peers "$tls_cluster" >/dev/null
C=$WORK/certs
client_tls=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client-key.pem")

# run_cluster MODE ROUND — MODE is plain or tls: one fresh cluster, preload, PUT and GET runs.
run_cluster() {
  local mode=$1 round=$2 i node_tls bench_tls cluster=$plain_cluster
  PIDS=()
  rm -rf "$WORK/data"
  [ "$mode" = tls ] && cluster=$tls_cluster
  for i in 1 2 3; do
    node_tls=()
    [ "$mode" = tls ] && node_tls=(--cert-file "$C/node-$i.pem" --key-file "$C/node-$i-key.pem"
      --trusted-ca-file "$C/ca.pem" --client-cert-auth
      --peer-cert-file "$C/node-$i.pem" --peer-key-file "$C/node-$i-key.pem"
      --peer-trusted-ca-file "$C/ca.pem")
    mkdir -p "$WORK/data/$i"
    "$BIN" --id "$i" --cluster "$cluster" --port $((PORT_BASE + i)) --data-dir "$WORK/data/$i" \
      --log-level warn "${node_tls[@]}" >"$WORK/$mode-$round-$i.log" 2>&1 &
    PIDS+=($!)
  done
  bench_tls=()
  [ "$mode" = tls ] && bench_tls=("${client_tls[@]}")
  # Every node must be up and see a leader.
  for i in 1 2 3; do
    for _ in $(seq 200); do
      "$CTL" --endpoints "127.0.0.1:$((PORT_BASE + i))" "${bench_tls[@]}" --json status 2>/dev/null |
        jq -e '.leader > 0' >/dev/null 2>&1 && break
      kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null || die "node $i ($mode) exited: $(cat "$WORK/$mode-$round-$i.log")"
      sleep 0.1
    done
  done
  "$BENCH" --endpoints "$endpoints" "${bench_tls[@]}" --connections 64 --keys "$KEYS" \
    --preload --ops 0 --no-progress --json >/dev/null
  for wl in put get; do
    "$BENCH" --endpoints "$endpoints" "${bench_tls[@]}" --connections 64 --keys "$KEYS" \
      --workload "$wl" --duration "$DURATION" --warmup "$WARMUP" --seed "$round" --no-progress --json |
      jq -c --arg mode "$mode" --argjson round "$round" --arg wl "$wl" \
        '{mode: $mode, round: $round, workload: $wl, ops_per_sec: .ops_per_sec, p50_us: .latency[$wl].p50_us, p99_us: .latency[$wl].p99_us, errors: .error_total}' |
      tee -a "$OUT"
    [ "$(tail -1 "$OUT" | jq .errors)" = 0 ] || die "$mode round $round: $wl had errors; the run is void"
  done
  stop_started
  PIDS=()
}

log "binary=$BIN rounds=$ROUNDS duration=${DURATION}s, results in $OUT"
for round in $(seq "$ROUNDS"); do
  run_cluster plain "$round"
  run_cluster tls "$round"
done
jq -rs 'group_by(.workload)[] | . as $runs | ($runs[0].workload) as $w |
  "\($w): plain " + ([$runs[] | select(.mode == "plain") | .ops_per_sec | floor | tostring] | join(" / ")) +
  "  tls " + ([$runs[] | select(.mode == "tls") | .ops_per_sec | floor | tostring] | join(" / "))' "$OUT"
