# The generated section of BENCHMARKS.md, from bench/compare.sh's raw results:
#   $runs: one coordinate-bench JSON report per run, plus system, round and conns
#   $rss:  one {phase, system, node, leader, kb} per process and phase (preload, end)
# and the run's settings and machine description as string arguments.
  def commas: if . < 1000 then tostring
    else ((. / 1000 | floor) | commas) + "," + ("00" + (. % 1000 | tostring))[-3:] end;
  def ms: if . == null then "–" else ((. / 10 | round) / 100 | tostring) + " ms" end;
  def two: if . == null then "–" else ((. * 100 | round) / 100 | tostring) end;
  def mib: ((. / 1024 * 10 | round) / 10 | tostring) + " MiB";
  def median: if length == 0 then null else sort | if length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end end;
  def lat(f): map(.latency[.workload] | f) | median;
  def cell(sys; wl; c): $runs | map(select(.system == sys and .label == wl and .conns == c));
  def agg(rs): {ops: (rs | map(.ops_per_sec) | median), rounds: (rs | map(.ops_per_sec | round)),
                other: (rs | map(.other_cores // 0) | max), client: (rs | map(.client_cpu_cores // 0) | median),
                p50: (rs | lat(.p50_us)), p99: (rs | lat(.p99_us)), errors: (rs | map(.error_total) | add),
                cores: (rs | map(.server_cores) | median)};
  # The ratio of each round (adjacent runs of the two systems), then the median of those.
  def paired(wl; c): [ $runs | map(select(.label == wl and .conns == c)) | group_by(.round)[]
      | (map(select(.system == "coordinate")) | first) as $co | (map(select(.system == "etcd")) | first) as $et
      | select($co != null and $et != null and $et.ops_per_sec > 0) | $co.ops_per_sec / $et.ops_per_sec ]
    | median;
  def times: if . == null then "–" else ((. * 100 | round) / 100 | tostring) + "×" end;
  def wlname: if . == "put" then "PUT" elif . == "get" then "linearizable GET"
    elif . == "sget" then "serializable GET" else . end;
  ($workloads | split(" ") | map(select(. != ""))) as $wls
  | ($conns | split(" ") | map(select(. != "") | tonumber)) as $cs
  | ($sconns | split(" ") | map(select(. != "") | tonumber)) as $scs
  | [ (($wls[] as $wl | $cs[] as $c | [$wl, $c]), ($scs[] as $c | ["sget", $c])) as [$wl, $c]
      | {wl: $wl, c: $c, co: agg(cell("coordinate"; $wl; $c)), et: agg(cell("etcd"; $wl; $c)),
         ratio: paired($wl; $c)} ] as $rows
  | ($rss | map(select(.phase == "preload"))) as $pre
  | ($rss | map(select(.phase == "end"))) as $post
  | def rsssum(p; sys): p | map(select(.system == sys) | .kb) | add;
    def rssmax(p; sys): p | map(select(.system == sys) | .kb) | max;
    ($rows | map(select(.wl == "put" and .c == 64)) | first) as $put64
  | ($rows | map(select(.wl == "get" and .c == 64)) | first) as $get64
  | def verdict(b): if b == null then "not measured" elif b then "**met**" else "**not met**" end;
  [
    "Measured \($date) by `bench/compare.sh`.",
    "",
    "- Machine: \($nproc) cores (\($cpu)), \($mem) RAM, Linux \($kernel); data dirs on \($fs).",
    (if $api == "grpc" then "- coordinate: \($coord); etcd \($etcd) from Debian (`etcd-server`); both through etcd's v3 gRPC API (KV Put and Range), with the same client (`coordinate-bench --target grpc`, its default `h2` client: calls framed by hand on the `h2` crate, each client one request in flight, \(if $grpcconns == "" then "one HTTP/2 connection per client" else "the clients multiplexed over \($grpcconns) HTTP/2 connections, as etcd client processes do" end))."
     else "- coordinate: \($coord), its HTTP API; etcd \($etcd) from Debian (`etcd-server`), v3 JSON gateway." end),
    "- Both: 3 nodes on 127.0.0.1, default settings (fsync on every commit), client on the same machine. CPU busy with other work just before the run: \($background)%.",
    "- Load: `coordinate-bench`, connections spread round-robin over the 3 client endpoints, \($keys) keys (pre-loaded), values \($vsize) B, uniformly random keys; \($warmup) warm-up + \($duration) measured per run; rounds: \($rounds), alternating which system runs first. Figures are the median of the rounds (ops/s of each round in brackets, in run order); the ratio is the median of the per-round ratios (each round runs the two systems back to back); latency is of successful requests. Server CPU is what the 3 server processes used together during a run (2.00 = both cores). Other load is the CPU used during a run by anything but the 6 servers and the client (other work on this machine, kernel threads), the largest over the row’s runs: above ~0.2 cores the row was measured on a busy machine.",
    "",
    "| workload | conns | coordinate ops/s | etcd ops/s | coordinate ÷ etcd | coordinate p50 / p99 | etcd p50 / p99 | server CPU, cores (coordinate / etcd) | other load, cores (max) | errors (coordinate / etcd) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ($rows[] |
      "| \(.wl | wlname) | \(.c) | \(.co.ops // 0 | round | commas) (\(.co.rounds | map(commas) | join(", "))) | \(.et.ops // 0 | round | commas) (\(.et.rounds | map(commas) | join(", "))) | \(.ratio | times) | \(.co.p50 | ms) / \(.co.p99 | ms) | \(.et.p50 | ms) / \(.et.p99 | ms) | \(.co.cores | two) / \(.et.cores | two) | \([.co.other, .et.other] | max | two) | \(.co.errors // 0) / \(.et.errors // 0) |"),
    "",
    "Resident memory (VmRSS) of each process, after pre-loading \($keys) keys of \($vsize) B, and at the end of all runs (leader marked *):",
    "",
    "| node | coordinate after pre-load | etcd after pre-load | coordinate at the end | etcd at the end |",
    "|---|---:|---:|---:|---:|",
    ([1, 2, 3][] as $n |
      def one(p; sys): p | map(select(.system == sys and .node == $n)) | first
        | "\(.kb | mib)\(if .leader then " *" else "" end)";
      "| \($n) | \(one($pre; "coordinate")) | \(one($pre; "etcd")) | \(one($post; "coordinate")) | \(one($post; "etcd")) |"),
    "| total | \(rsssum($pre; "coordinate") | mib) | \(rsssum($pre; "etcd") | mib) | \(rsssum($post; "coordinate") | mib) | \(rsssum($post; "etcd") | mib) |",
    "",
    "Targets of the benchmark issue (same run, 3 nodes, fsync on):",
    "",
    "| target | measured | |",
    "|---|---|---|",
    "| PUT at 64 connections ≥ 4× etcd, p99 ≤ etcd’s | \($put64.ratio | times), p99 \($put64.co.p99 | ms) vs \($put64.et.p99 | ms) | \(verdict(if $put64 == null then null else ($put64.ratio >= 4 and $put64.co.p99 <= $put64.et.p99) end)) |",
    "| linearizable GET at 64 connections ≥ 5× etcd | \($get64.ratio | times) | \(verdict(if $get64 == null then null else ($get64.ratio >= 5) end)) |",
    "| RSS with \($keys) keys below etcd’s | largest node \(rssmax($pre; "coordinate") | mib) vs \(rssmax($pre; "etcd") | mib); 3 nodes \(rsssum($pre; "coordinate") | mib) vs \(rsssum($pre; "etcd") | mib) | \(verdict(rssmax($pre; "coordinate") < rssmax($pre; "etcd") and rsssum($pre; "coordinate") < rsssum($pre; "etcd"))) |"
  ] | join("\n")
