# Reads `perf script -F comm,tid,ip,sym` output (one blank-line-separated stack per sample,
# leaf first) and prints the share of samples per activity of a coordinate node, per thread
# kind (the event loop: HTTP, peers and the raft loop; the log writer; helper threads). Each sample goes to the first category below whose pattern appears anywhere in its
# stack, so the order is the priority (e.g. a malloc inside a snapshot counts as snapshot).
BEGIN {
  n = 0
  cat[++n] = "snapshot: serialize, write, fsync, compact";  pat[n] = "maybe_snapshot|create_snapshot|Kv::snapshot|Kv>::snapshot"
  cat[++n] = "MVCC compaction (physical step)";             pat[n] = "compact_step"
  cat[++n] = "WAL fsync (fdatasync)";                        pat[n] = "sys_fdatasync|sys_fsync"
  cat[++n] = "peer transport (queue, encode, send)";         pat[n] = "raft::transport"
  cat[++n] = "WAL encode + write";                           pat[n] = "storage::wal|RaftStorage::append|write_to_bytes"
  cat[++n] = "apply: state machine, watch, replies";         pat[n] = "Node::apply|Node<S>::apply|Kv::apply|Kv>::apply|StateMachine>::appl|state::Store|WatchHub|serve_reads"
  cat[++n] = "raft-rs: step, ready, propose";                pat[n] = "raft::raw_node|raft::raft::|RawNode|flush_proposals|flush_reads|Node::handle|Node<S>::handle"
  cat[++n] = "HTTP: hyper/axum, handlers";                   pat[n] = "hyper::|axum::|coordinate::api|coordinate_server::api"
  cat[++n] = "waiting: channel recv, tokio park, epoll";     pat[n] = "recv_timeout|Receiver.*recv|park|epoll_wait|futex_wait"
  cat[++n] = "other";                                        pat[n] = "."
}
function flush() {
  if (stack == "") return
  kind = (comm ~ /^tokio/) ? "event loop" : (comm == "wal") ? "log writer" : "other threads"
  for (i = 1; i <= n; i++) if (stack ~ pat[i]) { count[kind, i]++; total[kind]++; all++; break }
  stack = ""
}
/^[^ \t]/ { flush(); comm = $1; next }
/^[ \t]/ { stack = stack " " $0; next }
/^$/ { flush() }
END {
  flush()
  k[1] = "event loop"; k[2] = "log writer"; k[3] = "other threads"
  printf "%-45s %12s %12s %12s %8s\n", "activity (share of the leader's samples)", k[1], k[2], k[3], "total"
  for (i = 1; i <= n; i++) {
    row = 0
    for (j = 1; j <= 3; j++) row += count[k[j], i]
    if (row == 0) continue
    printf "%-45s", cat[i]
    for (j = 1; j <= 3; j++) printf " %11.1f%%", 100 * count[k[j], i] / all
    printf " %7.1f%%\n", 100 * row / all
  }
  printf "%-45s", "all"
  for (j = 1; j <= 3; j++) printf " %11.1f%%", 100 * total[k[j]] / all
  printf " %7.1f%%\n", 100
}
