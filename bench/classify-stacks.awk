# Reads `perf script -F comm,tid,ip,sym` output (one blank-line-separated stack per sample,
# leaf first) and prints the share of samples per activity of a coordinate node, per thread
# kind. Each sample goes to the first category below whose pattern appears anywhere in its
# stack, so the order is the priority (e.g. a malloc inside a snapshot counts as snapshot).
BEGIN {
  n = 0
  cat[++n] = "snapshot: serialize, write, fsync, compact";  pat[n] = "maybe_snapshot|create_snapshot|Kv::snapshot"
  cat[++n] = "WAL fsync (fdatasync)";                        pat[n] = "sys_fdatasync|sys_fsync"
  cat[++n] = "peer transport (queue, encode, send)";         pat[n] = "raft::transport"
  cat[++n] = "WAL encode + write";                           pat[n] = "storage::wal|RaftStorage::append|write_to_bytes"
  cat[++n] = "apply: state machine, watch, replies";         pat[n] = "Node::apply|Kv::apply|WatchHub|serve_reads"
  cat[++n] = "raft-rs: step, ready, propose";                pat[n] = "raft::raw_node|raft::raft::|RawNode|flush_proposals|flush_reads|Node::handle"
  cat[++n] = "HTTP: hyper/axum, handlers";                   pat[n] = "hyper::|axum::|coordinate::api"
  cat[++n] = "waiting: channel recv, tokio park, epoll";     pat[n] = "recv_timeout|Receiver.*recv|park|epoll_wait|futex_wait"
  cat[++n] = "other";                                        pat[n] = "."
}
function flush() {
  if (stack == "") return
  kind = (comm == "raft") ? "raft thread" : "tokio workers"
  for (i = 1; i <= n; i++) if (stack ~ pat[i]) { count[kind, i]++; total[kind]++; all++; break }
  stack = ""
}
/^[^ \t]/ { flush(); comm = $1; next }
/^[ \t]/ { stack = stack " " $0; next }
/^$/ { flush() }
END {
  flush()
  printf "%-45s %14s %14s %8s\n", "activity (share of the leader's samples)", "raft thread", "tokio workers", "total"
  for (i = 1; i <= n; i++) {
    r = count["raft thread", i] + 0; t = count["tokio workers", i] + 0
    if (r + t == 0) continue
    printf "%-45s %13.1f%% %13.1f%% %7.1f%%\n", cat[i], 100 * r / all, 100 * t / all, 100 * (r + t) / all
  }
  printf "%-45s %13.1f%% %13.1f%% %7.1f%%\n", "all", 100 * total["raft thread"] / all, 100 * total["tokio workers"] / all, 100
}
