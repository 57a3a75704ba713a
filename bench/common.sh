# Shared by bench/compare.sh and bench/profile.sh (sourced, not run). Expects `set -euo
# pipefail`, and LOG_TAG set to the script's name.

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# install_missing cmd:package ... — installs from Debian the packages whose command is missing.
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Processes started by the script, stopped by pid on exit (TERM, then KILL after 10 s).
PIDS=()
stop_started() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# Builds the release binaries and copies them into $WORK/bin (a rebuild in the tree during a
# run cannot swap them); $COORDINATE_BIN, if set, is used instead of building coordinate.
# Sets BENCH.
build_binaries() {
  log "building release binaries"
  if [ -n "${COORDINATE_BIN:-}" ]; then
    cargo build --release --quiet --bin coordinate-bench
    cp "$COORDINATE_BIN" "$WORK/bin/coordinate"
  else
    cargo build --release --quiet --bin coordinate --bin coordinate-bench
    cp target/release/coordinate "$WORK/bin/coordinate"
  fi
  cp target/release/coordinate-bench "$WORK/bin/coordinate-bench"
  BENCH="$WORK/bin/coordinate-bench"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cpu_ticks PID... — CPU time (user + system, in clock ticks) used so far by these processes.
cpu_ticks() {
  local pid
  for pid in "$@"; do
    awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0
  done | awk '{s += $1} END {print s + 0}'
}

# busy_ticks — CPU time the whole machine has spent not idle and not waiting for I/O, in
# clock ticks summed over all CPUs (the unit of cpu_ticks).
busy_ticks() {
  head -1 /proc/stat | awk '{t = 0; for (i = 2; i <= 11; i++) t += $i; print t - $5 - $6}'
}

# machine_busy SECONDS — percentage of all CPUs busy (not idle, not iowait) over the window.
machine_busy() {
  local a b
  a=$(head -1 /proc/stat)
  sleep "$1"
  b=$(head -1 /proc/stat)
  echo "$a $b" | awk '{t1 = 0; for (i = 2; i <= 11; i++) t1 += $i; t2 = 0; for (i = 13; i <= 22; i++) t2 += $i;
    printf "%.0f", 100 - 100 * (($16 - $5) + ($17 - $6)) / (t2 - t1)}'
}

# cpu_by_thread SECONDS NAME=PID... — CPU used over the window by each process, split by thread
# name (cores: 1.00 = one CPU busy the whole time), and the machine's busy/iowait share.
cpu_by_thread() {
  local secs=$1 tick
  shift
  tick=$(getconf CLK_TCK)
  snap() {
    local arg name pid t
    for arg in "$@"; do
      name=${arg%%=*}
      pid=${arg#*=}
      for t in /proc/"$pid"/task/*; do
        # Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
        awk -v n="$name" -v c="$(cat "$t/comm" 2>/dev/null)" '{sub(/.*\) /, ""); print n "/" c, $12 + $13}' "$t/stat" 2>/dev/null || true
      done
    done | awk '{v[$1] += $2} END {for (k in v) print k, v[k]}' | sort
  }
  local a b s1 s2
  a=$(snap "$@")
  s1=$(head -1 /proc/stat)
  sleep "$secs"
  b=$(snap "$@")
  s2=$(head -1 /proc/stat)
  join <(echo "$a") <(echo "$b") |
    awk -v s="$secs" -v t="$tick" '{d = ($3 - $2) / t / s; if (d >= 0.005) printf "  %-28s %.2f cores\n", $1, d}' |
    sort -k2 -n -r
  echo "$s1 $s2" | awk '{t1 = 0; for (i = 2; i <= 11; i++) t1 += $i; t2 = 0; for (i = 13; i <= 22; i++) t2 += $i;
    d = t2 - t1; printf "  machine: %.0f%% busy (user %.0f%%, system+irq %.0f%%), iowait %.0f%%, idle %.0f%%\n",
    100 - 100 * (($16 - $5) + ($17 - $6)) / d, 100 * (($13 - $2) + ($14 - $3)) / d,
    100 * (($15 - $4) + ($18 - $7) + ($19 - $8)) / d, 100 * ($17 - $6) / d, 100 * ($16 - $5) / d}'
}
