//! etcd's v3 gRPC API on coordinate's client port, spoken to by a published etcd client
//! (`etcd-client`, the crates.io client Rust users have), against real processes: KV (Range
//! with its options, Put, DeleteRange, Txn, Compact), Lease (grant, keep-alive stream,
//! time-to-live, list, revoke), Maintenance (Status, Alarm, Defragment), the response header,
//! and etcd's error codes and texts. The REST API keeps working on the same port.

mod common;

use common::{Cluster, Security};
use etcd_client::{
    AlarmAction, AlarmType, Client, Compare, CompareOp, DeleteOptions, Error, GetOptions,
    LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};

/// An etcd client of node `id`.
async fn client(c: &Cluster, id: u64) -> Client {
    common::etcd_client(c, id).await
}

/// The gRPC code and message of a failed call.
fn grpc_error(e: Error) -> (tonic::Code, String) {
    match e {
        Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not a gRPC status: {other:?}"),
    }
}

#[test]
fn kv_calls_behave_as_etcds() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 1, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(kv_calls(&c, leader));
    // The REST API on the same port still answers, and sees the gRPC writes.
    c.assert_value(leader, "a", b"2");
}

async fn kv_calls(c: &Cluster, leader: u64) {
    let mut etcd = client(c, leader).await;

    // Put, and the header of its answer.
    let put = etcd.put("a", "1", None).await.expect("put");
    let header = put.header().expect("a header");
    assert_eq!(header.member_id(), 1);
    assert!(header.raft_term() >= 1);
    let first = header.revision();
    assert!(first >= 1);
    let put = etcd
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put with prev_kv");
    assert_eq!(put.prev_key().map(|kv| kv.value()), Some(&b"1"[..]));
    assert_eq!(put.header().unwrap().revision(), first + 1);
    for (k, v) in [("b/1", "x"), ("b/2", "y"), ("b/3", "z"), ("c", "w")] {
        etcd.put(k, v, None).await.expect("put");
    }

    // Range: one key, its versions and revisions.
    let got = etcd.get("a", None).await.expect("get");
    let kv = &got.kvs()[0];
    assert_eq!((kv.key(), kv.value()), (&b"a"[..], &b"2"[..]));
    assert_eq!(
        (kv.create_revision(), kv.mod_revision()),
        (first, first + 1)
    );
    assert_eq!(kv.version(), 2);
    assert_eq!(got.count(), 1);
    // A prefix, limited, counted, sorted, keys only.
    let prefix = etcd
        .get("b/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix");
    let keys: Vec<&[u8]> = prefix.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [&b"b/1"[..], b"b/2", b"b/3"]);
    let limited = etcd
        .get("b/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .expect("limited");
    assert_eq!(
        (limited.kvs().len(), limited.more(), limited.count()),
        (2, true, 3)
    );
    let counted = etcd
        .get(
            "b/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count only");
    assert_eq!((counted.kvs().len(), counted.count()), (0, 3));
    let sorted = etcd
        .get(
            "b/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await
        .expect("sorted");
    let values: Vec<&[u8]> = sorted.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, [&b"z"[..], b"y", b"x"]);
    let keys_only = etcd
        .get("b/1", Some(GetOptions::new().with_keys_only()))
        .await
        .expect("keys only");
    assert_eq!(keys_only.kvs()[0].value(), b"");
    // From a key on, and [key, range_end).
    let from = etcd
        .get("b/2", Some(GetOptions::new().with_from_key()))
        .await
        .expect("from key");
    assert_eq!(from.count(), 3, "b/2, b/3, c");
    let between = etcd
        .get("b/1", Some(GetOptions::new().with_range("b/3")))
        .await
        .expect("range");
    assert_eq!(between.count(), 2);
    // An old revision, until compacted.
    let old = etcd
        .get("a", Some(GetOptions::new().with_revision(first)))
        .await
        .expect("get at a revision");
    assert_eq!(old.kvs()[0].value(), b"1");

    // Txn: compares, both branches, a read inside, the header revision of a write.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "2")])
        .and_then([
            TxnOp::put("t", "yes", None),
            TxnOp::get("b/", Some(GetOptions::new().with_prefix())),
        ])
        .or_else([TxnOp::put("t", "no", None)]);
    let done = etcd.txn(txn).await.expect("txn");
    assert!(done.succeeded());
    let now = etcd.get("t", None).await.expect("get t");
    assert_eq!(now.kvs()[0].value(), b"yes");
    assert_eq!(
        done.header().unwrap().revision(),
        now.kvs()[0].mod_revision()
    );
    match &done.op_responses()[1] {
        TxnOpResponse::Get(r) => assert_eq!(r.count(), 3),
        other => panic!("second answer of the txn: {other:?}"),
    }
    let failed = etcd
        .txn(
            Txn::new()
                .when([Compare::version("a", CompareOp::Greater, 5)])
                .and_then([TxnOp::put("t", "yes again", None)])
                .or_else([TxnOp::delete("t", None)]),
        )
        .await
        .expect("txn");
    assert!(!failed.succeeded());
    assert!(etcd.get("t", None).await.unwrap().kvs().is_empty());
    // A put in a transaction returns the previous key only when it asks.
    let puts = Txn::new().and_then([
        TxnOp::put("t", "plain", None),
        TxnOp::put("t2", "asked", Some(PutOptions::new().with_prev_key())),
    ]);
    etcd.put("t2", "before", None).await.unwrap();
    let done = etcd.txn(puts).await.expect("txn of puts");
    let prevs: Vec<Option<Vec<u8>>> = done
        .op_responses()
        .iter()
        .map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.value().to_vec()),
            other => panic!("not a put answer: {other:?}"),
        })
        .collect();
    assert_eq!(prevs, [None, Some(b"before".to_vec())]);
    etcd.delete("t", None).await.unwrap();
    etcd.delete("t2", None).await.unwrap();
    // etcd's API-layer checks of a transaction.
    let twice = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    assert_eq!(
        grpc_error(etcd.txn(twice).await.unwrap_err()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request".to_string()
        )
    );
    let many = Txn::new().and_then(
        (0..129)
            .map(|i| TxnOp::put(format!("m{i}"), "v", None))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        grpc_error(etcd.txn(many).await.unwrap_err()).1,
        "etcdserver: too many operations in txn request"
    );

    // DeleteRange with prev_kv.
    let deleted = etcd
        .delete(
            "b/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete prefix");
    assert_eq!(deleted.deleted(), 3);
    assert_eq!(deleted.prev_kvs().len(), 3);

    // Compact, then the old revision is gone, with etcd's code and text.
    let current = etcd
        .get("a", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(current, None).await.expect("compact");
    let compacted = etcd
        .get("a", Some(GetOptions::new().with_revision(first)))
        .await
        .unwrap_err();
    assert_eq!(
        grpc_error(compacted),
        (
            tonic::Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".to_string()
        )
    );
    let future = etcd
        .get("a", Some(GetOptions::new().with_revision(current + 100)))
        .await
        .unwrap_err();
    assert_eq!(
        grpc_error(future).1,
        "etcdserver: mvcc: required revision is a future revision"
    );
    // An empty key, and ignore_value on a missing key.
    assert_eq!(
        grpc_error(etcd.put("", "v", None).await.unwrap_err()),
        (
            tonic::Code::InvalidArgument,
            "etcdserver: key is not provided".to_string()
        )
    );
    let ignore = etcd
        .put("missing", "", Some(PutOptions::new().with_ignore_value()))
        .await
        .unwrap_err();
    assert_eq!(grpc_error(ignore).1, "etcdserver: key not found");
}

/// Three nodes: a write through one member's gRPC endpoint is read through another's at
/// once (Range is linearizable by default).
#[test]
fn writes_through_one_member_are_read_through_another() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut writer = client(&c, follower).await;
        let mut reader = client(&c, leader).await;
        for i in 0..20 {
            writer
                .put(format!("k{i}"), format!("v{i}"), None)
                .await
                .expect("put through a follower");
            let got = reader.get(format!("k{i}"), None).await.expect("get");
            assert_eq!(got.kvs()[0].value(), format!("v{i}").as_bytes());
        }
    });
}

#[test]
fn leases_and_maintenance_behave_as_etcds() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 1, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(lease_calls(&c, leader));
    rt.block_on(maintenance_calls(&c, leader));
}

async fn lease_calls(c: &Cluster, leader: u64) {
    let mut etcd = client(c, leader).await;
    let granted = etcd.lease_grant(30, None).await.expect("grant");
    let id = granted.id();
    assert!(id > 0);
    assert_eq!(granted.ttl(), 30);
    etcd.put("leased", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put with a lease");
    let ttl = etcd
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live");
    assert_eq!(ttl.granted_ttl(), 30);
    assert!((1..=30).contains(&ttl.ttl()), "ttl {}", ttl.ttl());
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    let (mut keeper, mut answers) = etcd.lease_keep_alive(id).await.expect("keep-alive stream");
    keeper.keep_alive().await.expect("send a keep-alive");
    let answer = answers
        .message()
        .await
        .expect("a keep-alive answer")
        .expect("the stream is open");
    assert_eq!((answer.id(), answer.ttl()), (id, 30));
    let listed = etcd.leases().await.expect("leases");
    assert!(listed.leases().iter().any(|l| l.id() == id));
    // etcd's refusals.
    let exists = etcd
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(id)))
        .await
        .unwrap_err();
    assert_eq!(
        grpc_error(exists),
        (
            tonic::Code::FailedPrecondition,
            "etcdserver: lease already exists".to_string()
        )
    );
    let huge = etcd.lease_grant(9_000_000_001, None).await.unwrap_err();
    assert_eq!(grpc_error(huge).1, "etcdserver: too large lease TTL");
    // Revoked: its key goes, and etcd's answers for a lease that is gone.
    etcd.lease_revoke(id).await.expect("revoke");
    assert!(etcd.get("leased", None).await.unwrap().kvs().is_empty());
    let gone = etcd
        .lease_time_to_live(id, None)
        .await
        .expect("time to live");
    assert_eq!(gone.ttl(), -1);
    keeper.keep_alive().await.expect("send a keep-alive");
    let answer = answers.message().await.expect("an answer").expect("open");
    assert_eq!(answer.ttl(), 0, "a keep-alive of a revoked lease");
    let again = etcd.lease_revoke(id).await.unwrap_err();
    assert_eq!(
        grpc_error(again),
        (
            tonic::Code::NotFound,
            "etcdserver: requested lease not found".to_string()
        )
    );
}

async fn maintenance_calls(c: &Cluster, leader: u64) {
    let mut etcd = client(c, leader).await;
    etcd.put("k", "v", None).await.expect("put");
    let status = etcd.status().await.expect("status");
    assert_eq!(status.leader(), leader);
    assert!(status.raft_term() >= 1);
    assert!(status.db_size() > 0);
    assert!(status.raft_index() >= 2);
    assert!(!status.version().is_empty());
    assert_eq!(status.header().unwrap().member_id(), leader);
    let alarms = etcd
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm list");
    assert!(alarms.alarms().is_empty());
    etcd.defragment().await.expect("defragment (a no-op)");
}

#[test]
fn watches_behave_as_etcds() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 1, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(watch_calls(&c, leader));
}

/// The next answer of a watch stream, within 10 s.
async fn answer(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10 s")
        .expect("the stream is fine")
        .expect("the stream is open")
}

/// The watch id of the next answer, which must say the watcher was created.
async fn created(stream: &mut etcd_client::WatchStream) -> i64 {
    let a = answer(stream).await;
    assert!(a.created(), "not a created answer: {a:?}");
    a.watch_id()
}

/// (watch id, kind, key, value) of each event of an answer.
fn events(a: &etcd_client::WatchResponse) -> Vec<(i64, etcd_client::EventType, String, String)> {
    a.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("an event's key");
            (
                a.watch_id(),
                e.event_type(),
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn watch_calls(c: &Cluster, leader: u64) {
    use etcd_client::EventType::{Delete, Put};
    use etcd_client::{WatchFilterType, WatchOptions};
    let mut etcd = client(c, leader).await;
    let first = etcd
        .put("w/a", "0", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();

    // Two watchers on one stream, from now: each gets its key's events, in order.
    let mut stream = etcd.watch("w/a", None).await.expect("watch");
    let a = created(&mut stream).await;
    stream.watch("w/b", None).await.expect("a second watcher");
    let b = created(&mut stream).await;
    assert_ne!(a, b);
    etcd.put("w/a", "1", None).await.unwrap();
    etcd.put("w/b", "1", None).await.unwrap();
    etcd.put("w/a", "2", None).await.unwrap();
    etcd.delete("w/a", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.extend(events(&answer(&mut stream).await));
    }
    let of = |id: i64| -> Vec<_> { seen.iter().filter(|e| e.0 == id).cloned().collect() };
    let s = |v: &str| v.to_string();
    assert_eq!(
        of(a),
        [
            (a, Put, s("w/a"), s("1")),
            (a, Put, s("w/a"), s("2")),
            (a, Delete, s("w/a"), s("")),
        ]
    );
    assert_eq!(of(b), [(b, Put, s("w/b"), s("1"))]);
    stream.cancel(a).await.expect("cancel");
    let canceled = answer(&mut stream).await;
    assert!(
        canceled.canceled() && canceled.watch_id() == a,
        "{canceled:?}"
    );

    // From a past revision, a prefix, with the previous values.
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(first)
        .with_prev_key();
    let mut past = etcd
        .watch("w/", Some(options))
        .await
        .expect("watch the past");
    created(&mut past).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        let a = answer(&mut past).await;
        for e in a.events() {
            let prev = e.prev_kv().map(|kv| kv.value_str().unwrap().to_string());
            got.push((e.kv().unwrap().mod_revision(), prev));
        }
    }
    assert_eq!(got[0], (first, None));
    assert_eq!(
        got[4].1.as_deref(),
        Some("2"),
        "the delete's previous value"
    );

    // Filters: no puts.
    let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
    let mut deletes = etcd
        .watch("w/f", Some(options))
        .await
        .expect("watch deletes");
    let d = created(&mut deletes).await;
    etcd.put("w/f", "x", None).await.unwrap();
    etcd.delete("w/f", None).await.unwrap();
    assert_eq!(
        events(&answer(&mut deletes).await),
        [(d, Delete, s("w/f"), s(""))]
    );

    // A start before the compaction point: created, then canceled with the oldest revision.
    let now = etcd
        .put("w/c", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(now, None).await.expect("compact");
    let options = WatchOptions::new().with_start_revision(first);
    let mut old = etcd
        .watch("w/c", Some(options))
        .await
        .expect("watch compacted");
    created(&mut old).await;
    let a = answer(&mut old).await;
    assert!(a.canceled(), "{a:?}");
    assert_eq!(a.compact_revision(), now);
}

/// MemberList, MemberAdd (a learner nobody runs yet), MemberPromote refused for it (not
/// caught up), MemberRemove, on three nodes.
#[test]
fn members_through_grpc() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut etcd = client(&c, leader).await;
        let listed = etcd.member_list().await.expect("member list");
        let mut want = c.peer_urls().to_vec();
        want.sort();
        assert_eq!(common::listed_peer_urls(&listed), want);
        let me = listed.members().iter().find(|m| m.id() == leader).unwrap();
        assert_eq!(me.client_urls(), [c.client_url(leader)]);

        let url = format!("http://127.0.0.1:{}", common::free_port());
        let added = etcd
            .member_add(
                [url.clone()],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
            .expect("add a learner");
        let new = added.member().expect("the new member");
        assert_eq!((new.id(), new.is_learner()), (4, true));
        assert_eq!(added.member_list().len(), 4);
        // etcd's codes and texts, which its clients turn into typed errors.
        let taken = etcd.member_add([url.clone()], None).await.unwrap_err();
        let want = "etcdserver: Peer URLs already exists";
        assert_eq!(
            grpc_error(taken),
            (tonic::Code::FailedPrecondition, want.into())
        );
        let promote = etcd.member_promote(4).await.unwrap_err();
        let want = "etcdserver: can only promote a learner member which is in sync with leader";
        assert_eq!(
            grpc_error(promote),
            (tonic::Code::FailedPrecondition, want.into())
        );
        let voter = etcd.member_promote(leader).await.unwrap_err();
        let want = "etcdserver: can only promote a learner member";
        assert_eq!(
            grpc_error(voter),
            (tonic::Code::FailedPrecondition, want.into())
        );
        let removed = etcd.member_remove(4).await.expect("remove");
        assert_eq!(removed.members().len(), 3);
        let gone = etcd.member_remove(4).await.unwrap_err();
        let want = "etcdserver: member not found";
        assert_eq!(grpc_error(gone), (tonic::Code::NotFound, want.into()));

        // MoveLeader: refused on a follower and for a non-voter, done on the leader.
        let target = c.ids().into_iter().find(|&id| id != leader).unwrap();
        let mut on_follower = client(&c, target).await;
        let refused = on_follower.move_leader(leader).await.unwrap_err();
        assert_eq!(grpc_error(refused).1, "etcdserver: not leader");
        let bad = etcd.move_leader(99).await.unwrap_err();
        assert_eq!(grpc_error(bad).1, "etcdserver: bad leader transferee");
        etcd.move_leader(target).await.expect("move the leadership");
        let status = on_follower.status().await.expect("status");
        assert_eq!(status.leader(), target);
    });
}

/// A member as MemberList shows it: id, name, peer URLs, client URLs.
type Listed = (u64, String, Vec<String>, Vec<String>);

/// Node `id`'s MemberList, in id order (`None` while it does not answer).
async fn listed(c: &Cluster, id: u64) -> Option<Vec<Listed>> {
    let mut etcd = Client::connect([c.endpoint(id)], None).await.ok()?;
    let list = etcd.member_list().await.ok()?;
    let mut members: Vec<Listed> = list
        .members()
        .iter()
        .map(|m| {
            let name = m.name().to_string();
            (
                m.id(),
                name,
                m.peer_urls().to_vec(),
                m.client_urls().to_vec(),
            )
        })
        .collect();
    members.sort();
    Some(members)
}

/// Polls node `id`'s MemberList until it is `want`; panics with what it last showed.
async fn wait_listed(c: &Cluster, id: u64, want: &[Listed]) {
    let deadline = std::time::Instant::now() + common::WAIT_TIMEOUT;
    loop {
        let now = listed(c, id).await;
        if now.as_deref() == Some(want) {
            return;
        }
        if std::time::Instant::now() > deadline {
            c.fail(&format!("node {id} lists {now:?}, want {want:?}"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every member publishes its name and client URL once it runs, so MemberList on any member
/// shows every member's, and every member's headers carry one cluster id. MemberUpdate moves
/// a member to another peer port (refused for an unknown id, a URL in use, two URLs); the
/// member, restarted there, serves again and keeps what it published. A member added later
/// lists them all and answers with the same cluster id.
#[test]
fn member_attributes_and_moves() {
    let (mut c, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let everyone = |c: &Cluster| -> Vec<Listed> {
        c.ids()
            .into_iter()
            .map(|id| {
                let peer = c.peer_urls()[(id - 1) as usize].clone();
                (id, id.to_string(), vec![peer], vec![c.client_url(id)])
            })
            .collect()
    };
    rt.block_on(async {
        let want = everyone(&c);
        let mut cluster_ids = Vec::new();
        for id in c.ids() {
            wait_listed(&c, id, &want).await;
            let status = client(&c, id).await.status().await.expect("status");
            cluster_ids.push(status.header().expect("a header").cluster_id());
        }
        assert!(cluster_ids[0] != 0, "{cluster_ids:?}");
        assert!(
            cluster_ids.iter().all(|&i| i == cluster_ids[0]),
            "{cluster_ids:?}"
        );

        let mut etcd = client(&c, leader).await;
        let missing = etcd.member_update(9, ["http://127.0.0.1:1".to_string()]);
        assert_eq!(
            grpc_error(missing.await.unwrap_err()),
            (tonic::Code::NotFound, "etcdserver: member not found".into())
        );
        let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
        let taken = c.peer_urls()[(leader - 1) as usize].clone();
        let in_use = etcd.member_update(follower, [taken]).await.unwrap_err();
        assert_eq!(
            grpc_error(in_use),
            (
                tonic::Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists".into()
            )
        );
        let two = [
            "http://127.0.0.1:1".to_string(),
            "http://127.0.0.1:2".into(),
        ];
        let two = etcd.member_update(follower, two).await.unwrap_err();
        assert_eq!(grpc_error(two).0, tonic::Code::InvalidArgument);
    });

    // Move the follower: tell the cluster, then restart it at the new URL.
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let moved = c.move_peer(follower);
    rt.block_on(async {
        let mut etcd = client(&c, leader).await;
        let answer = etcd
            .member_update(follower, [moved.clone()])
            .await
            .expect("member update");
        let shown = answer.members().iter().find(|m| m.id() == follower);
        assert_eq!(
            shown.map(|m| m.peer_urls().to_vec()),
            Some(vec![moved.clone()])
        );
    });
    c.stop(follower);
    c.restart(follower);
    c.put_ok(leader, "moved", b"yes");
    let served = common::wait_until(
        common::WAIT_TIMEOUT,
        || matches!(c.get(follower, "moved"), Ok((200, body)) if body == b"yes"),
    );
    if !served {
        c.fail("the moved member does not serve a linearizable read");
    }
    rt.block_on(async {
        let want = everyone(&c);
        for id in c.ids() {
            wait_listed(&c, id, &want).await;
        }
    });
    // A member added later lists everyone, and answers with the founders' cluster id.
    let (joiner, url) = c.add_node_slot();
    rt.block_on(async {
        let mut etcd = client(&c, leader).await;
        let added = etcd
            .member_add(
                [url],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
            .expect("add a learner");
        assert_eq!(added.member().map(|m| m.id()), Some(joiner));
    });
    c.start_joining(joiner);
    rt.block_on(async {
        let want = everyone(&c);
        wait_listed(&c, joiner, &want).await;
        wait_listed(&c, leader, &want).await;
        let status = client(&c, joiner).await.status().await.expect("status");
        let founders = client(&c, leader).await.status().await.expect("status");
        let id = |s: &etcd_client::StatusResponse| s.header().map(|h| h.cluster_id());
        assert_eq!(id(&status), id(&founders));
    });
    // REST shows the same attributes.
    let rest = c.members(leader);
    let one = rest.iter().find(|m| m["id"] == follower).expect("listed");
    assert_eq!(one["name"], follower.to_string());
    assert_eq!(
        one["client_urls"],
        serde_json::json!([c.client_url(follower)])
    );
    assert_eq!(one["peer_url"], moved);
}

/// HashKV at one revision is the same on every member, before and after a compaction, and
/// differs once the history does.
#[test]
fn hash_kv_is_equal_on_every_member() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut clients = Vec::new();
        for id in c.ids() {
            clients.push(client(&c, id).await);
        }
        let writer = &mut client(&c, leader).await;
        for i in 0..50 {
            writer
                .put(format!("h{}", i % 7), format!("v{i}"), None)
                .await
                .unwrap();
        }
        let rev = writer
            .get("h0", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let mut hashes = Vec::new();
        for etcd in clients.iter_mut() {
            // A linearizable read first: this member has applied `rev` when it answers.
            etcd.get("h0", None).await.unwrap();
            hashes.push(etcd.hash_kv(rev).await.expect("hash kv").hash());
        }
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
        writer.compact(rev - 10, None).await.expect("compact");
        let mut after = Vec::new();
        for etcd in clients.iter_mut() {
            etcd.get("h0", None).await.unwrap();
            after.push(etcd.hash_kv(rev).await.expect("hash kv").hash());
        }
        assert!(after.iter().all(|h| *h == after[0]), "{after:?}");
        assert_ne!(
            after[0], hashes[0],
            "compaction made old versions unreadable"
        );
        let old = clients[0].hash_kv(rev - 20).await.unwrap_err();
        assert_eq!(grpc_error(old).0, tonic::Code::OutOfRange);
    });
}

/// Hostile gRPC input: out-of-range numbers are read as etcd reads them (a negative
/// revision or limit is "none"), an inverted range is empty, and garbage bodies — a
/// protobuf that does not parse, a frame claiming 2 GiB — get an error status while the node
/// serves on.
#[test]
fn hostile_grpc_input_gets_errors_and_changes_nothing() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 1, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut etcd = client(&c, leader).await;
        etcd.put("x", "1", None).await.unwrap();
        let odd = etcd
            .get(
                "x",
                Some(GetOptions::new().with_revision(-5).with_limit(-3)),
            )
            .await
            .expect("negative revision and limit");
        assert_eq!(odd.kvs().len(), 1);
        let inverted = etcd
            .get("z", Some(GetOptions::new().with_range("a")))
            .await
            .expect("an inverted range");
        assert_eq!(inverted.count(), 0);

        let addr = c.endpoint(leader);
        for (what, body) in [
            (
                "a protobuf that does not parse",
                grpc_frame(3, &[0xff, 0xff, 0xff]),
            ),
            ("a frame claiming 2 GiB", grpc_frame(1 << 31, b"short")),
        ] {
            // The Watch service is served by hand (api/grpc/watch_wire.rs): the same errors.
            for path in ["/etcdserverpb.KV/Range", "/etcdserverpb.Watch/Watch"] {
                let status = raw_grpc(&addr, path, body.clone()).await;
                assert!(
                    status.as_deref().is_some_and(|s| s != "0"),
                    "{what} to {path}: grpc-status {status:?}"
                );
            }
        }
        let unknown = raw_grpc(&addr, "/etcdserverpb.Watch/Nothing", grpc_frame(0, b"")).await;
        assert_eq!(
            unknown.as_deref(),
            Some("12"),
            "an unknown Watch method: Unimplemented"
        );
        let after = etcd.get("x", None).await.expect("still serving");
        assert_eq!(after.kvs()[0].value(), b"1");
    });
}

/// A gRPC message frame: uncompressed, announcing `len` bytes, followed by `body`.
fn grpc_frame(len: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// POSTs `body` as a gRPC call over a raw HTTP/2 connection; the `grpc-status` the server
/// answered (from the headers or the trailers), if any.
async fn raw_grpc(addr: &str, path: &str, body: Vec<u8>) -> Option<String> {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("a request");
    let resp = sender.send_request(req).await.expect("an answer");
    let in_headers = resp.headers().get("grpc-status").cloned();
    let collected = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        resp.into_body().collect(),
    )
    .await
    .expect("the body within 10 s")
    .ok()?;
    let in_trailers = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned());
    in_headers
        .or(in_trailers)
        .map(|v| v.to_str().unwrap_or("?").to_string())
}

/// Watch progress with etcd's meaning — a notification at revision R comes after every
/// event up to R — for `RequestProgress` (watch id -1) and for `progress_notify` watchers;
/// and `fragment`, which cuts a revision too big for one response into several.
#[test]
fn watch_progress_and_fragments() {
    let (c, leader) = Cluster::start_with_leader_as(
        Security::Plain,
        1,
        &["--experimental-watch-progress-notify-interval", "300ms"],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut etcd = client(&c, leader).await;
        let revision_of = |r: etcd_client::PutResponse| r.header().unwrap().revision();

        // No watcher: the applied revision.
        let first = revision_of(etcd.put("p/c", "0", None).await.unwrap());
        let mut stream = etcd.watch("p/a", None).await.expect("watch");
        let a = created(&mut stream).await;
        stream.cancel(a).await.unwrap();
        assert!(answer(&mut stream).await.canceled());
        stream.request_progress().await.unwrap();
        let p = answer(&mut stream).await;
        assert_eq!((p.watch_id(), p.events().len()), (-1, 0), "{p:?}");
        assert_eq!(p.header().unwrap().revision(), first);

        // Two watchers and writes to their keys and to others: every progress answer comes
        // after every event up to its revision, and one reaches the last write.
        stream.watch("p/a", None).await.unwrap();
        let a = created(&mut stream).await;
        let options = etcd_client::WatchOptions::new().with_prefix();
        stream.watch("p/b", Some(options)).await.unwrap();
        let b = created(&mut stream).await;
        let mut expected = Vec::new();
        let mut last = first;
        for i in 0..60 {
            let key = ["p/a", "p/b1", "p/b2", "p/c"][i % 4];
            last = revision_of(etcd.put(key, i.to_string(), None).await.unwrap());
            if key != "p/c" {
                expected.push(last);
            }
        }
        let mut seen = Vec::new();
        loop {
            stream.request_progress().await.unwrap();
            let progress = loop {
                let r = answer(&mut stream).await;
                if r.watch_id() == -1 {
                    break r.header().unwrap().revision();
                }
                assert!([a, b].contains(&r.watch_id()), "{r:?}");
                seen.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
            };
            assert!(
                progress <= last,
                "progress {progress} past the store {last}"
            );
            let promised: Vec<i64> = expected
                .iter()
                .copied()
                .filter(|&r| r <= progress)
                .collect();
            let got: Vec<i64> = seen.iter().copied().filter(|&r| r <= progress).collect();
            assert_eq!(got, promised, "events up to progress {progress}");
            if progress == last {
                break;
            }
        }
        assert_eq!(seen, expected);

        // progress_notify: after an idle interval, the watcher's own empty answer at the
        // applied revision.
        let options = etcd_client::WatchOptions::new().with_progress_notify();
        let mut notified = etcd.watch("p/n", Some(options)).await.expect("watch");
        let n = created(&mut notified).await;
        let put = revision_of(etcd.put("p/n", "x", None).await.unwrap());
        assert_eq!(events(&answer(&mut notified).await).len(), 1);
        let p = answer(&mut notified).await;
        assert_eq!((p.watch_id(), p.events().len()), (n, 0), "{p:?}");
        assert_eq!(p.header().unwrap().revision(), put);
    });

    // fragment: three 900 KiB values in one revision arrive in three responses, the first
    // two marked; a watcher that did not ask gets the revision whole.
    rt.block_on(async {
        use coordinate_etcd_api::etcdserverpb as pb;
        use pb::watch_request::RequestUnion;
        let url = c.client_url(leader);
        let channel = tonic::transport::Channel::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut watch = pb::watch_client::WatchClient::new(channel);
        let create = |fragment| pb::WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: b"f/".to_vec(),
                range_end: b"f0".to_vec(),
                fragment,
                ..Default::default()
            })),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(create(true)).await.unwrap();
        tx.send(create(false)).await.unwrap();
        let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut answers = watch.watch(requests).await.expect("watch").into_inner();
        let fragmented_id = raw_answer(&mut answers).await.watch_id;
        let whole_id = raw_answer(&mut answers).await.watch_id;
        let mut etcd = client(&c, leader).await;
        let big = vec![b'v'; 900 << 10];
        let puts = ["f/1", "f/2", "f/3"].map(|k| TxnOp::put(k, big.clone(), None));
        etcd.txn(Txn::new().and_then(puts))
            .await
            .expect("a big txn");
        let mut fragments = Vec::new();
        let mut whole = Vec::new();
        while whole.is_empty() || fragments.last().is_none_or(|(f, _)| *f) {
            let r = raw_answer(&mut answers).await;
            match r.watch_id {
                id if id == fragmented_id => fragments.push((r.fragment, r.events.len())),
                id if id == whole_id => whole.push((r.fragment, r.events.len())),
                other => panic!("an answer for watcher {other}"),
            }
        }
        assert_eq!(fragments, [(true, 1), (true, 1), (false, 1)]);
        assert_eq!(whole, [(false, 3)]);
        drop(tx);
    });
}

/// The next answer of a raw watch stream, within 10 s.
async fn raw_answer(
    answers: &mut tonic::Streaming<coordinate_etcd_api::etcdserverpb::WatchResponse>,
) -> coordinate_etcd_api::etcdserverpb::WatchResponse {
    tokio::time::timeout(std::time::Duration::from_secs(10), answers.message())
        .await
        .expect("an answer within 10 s")
        .expect("the stream is fine")
        .expect("the stream is open")
}

/// The standard gRPC health service: SERVING while the member knows a leader; NOT_SERVING,
/// streamed to a watcher, once the others are gone and it knows none.
#[test]
fn grpc_health_follows_the_leader() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let (mut c, _) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = c.client_url(1);
    let mut health = rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        HealthClient::new(channel)
    });
    let ask = HealthCheckRequest {
        service: String::new(),
    };
    let status = rt.block_on(async {
        let mut watched = health.watch(ask.clone()).await.expect("watch").into_inner();
        loop {
            let next = tokio::time::timeout(common::WAIT_TIMEOUT, watched.message()).await;
            let answer = next.expect("a status").expect("the stream").expect("open");
            if answer.status() == ServingStatus::Serving {
                break watched;
            }
        }
    });
    let mut watched = status;
    c.stop(2);
    c.stop(3);
    rt.block_on(async {
        loop {
            let next = tokio::time::timeout(common::WAIT_TIMEOUT, watched.message()).await;
            let answer = next.expect("a change").expect("the stream").expect("open");
            if answer.status() == ServingStatus::NotServing {
                break;
            }
        }
        let now = health.check(ask).await.expect("check").into_inner();
        assert_eq!(now.status(), ServingStatus::NotServing);
        let unknown = HealthCheckRequest {
            service: "no.such.Service".into(),
        };
        let e = health.check(unknown).await.expect_err("an unknown service");
        assert_eq!(e.code(), tonic::Code::NotFound);
    });
}

/// `coordinate-bench --target grpc` with each of its gRPC clients, against a 3-node cluster
/// through a follower and the leader: every key of the pre-load written, every read finds it,
/// no call fails, and the keys are there for etcd's client.
#[test]
fn the_load_tool_speaks_grpc_with_each_client() {
    let (c, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let endpoints = format!("{},{}", c.endpoint(follower), c.endpoint(leader));
    for client in ["h2", "tonic"] {
        let prefix = format!("{client}-");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coordinate-bench"))
            .args(["--endpoints", &endpoints, "--target", "grpc"])
            .args([
                "--grpc-client",
                client,
                "--grpc-conns",
                "2",
                "--connections",
                "8",
            ])
            .args(["--key-prefix", &prefix, "--keys", "60", "--preload"])
            .args([
                "--workload",
                "get",
                "--ops",
                "300",
                "--json",
                "--no-progress",
            ])
            .output()
            .expect("run coordinate-bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{client}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["preload"]["ok"], 60, "{client}: {report}");
        assert_eq!(report["error_total"], 0, "{client}: {report}");
        assert_eq!(report["ok"], 300, "{client}: {report}");
        assert_eq!(report["not_found"], 0, "{client}: {report}");
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut etcd = client(&c, leader).await;
        for prefix in ["h2-", "tonic-"] {
            let count = GetOptions::new().with_prefix().with_count_only();
            let got = etcd.get(prefix, Some(count)).await.expect("count");
            assert_eq!(got.count(), 60, "{prefix}");
        }
    });
}
