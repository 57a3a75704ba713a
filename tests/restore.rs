//! Disaster recovery: a backup taken through etcd's Maintenance/Snapshot (what `etcdctl
//! snapshot save` stores) seeds a brand-new cluster with `coordinate restore`, keeping
//! revisions, history and leases; a damaged backup or an occupied data directory is refused
//! with a clear error and changes nothing.

mod common;

use common::etcd_client as client;
use common::{run_to_exit, Cluster, Security};
use etcd_client::{GetOptions, LeaseTimeToLiveOptions};

/// What the old cluster held, to find again in the new one.
struct Before {
    revision: i64,
    first_a: i64,
    lease: i64,
}

#[test]
fn a_backup_seeds_a_new_cluster() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (old, leader) = Cluster::start_with_leader_as(Security::Plain, 3, &[]);
    let follower = old.ids().into_iter().find(|&id| id != leader).unwrap();
    let kept = tempfile::tempdir().expect("a directory for the backup");
    let backup = kept.path().join("backup.db");
    let before = rt.block_on(async {
        let mut etcd = client(&old, leader).await;
        let first_a = etcd.put("a", "1", None).await.unwrap();
        etcd.put("a", "2", None).await.unwrap();
        let lease = etcd.lease_grant(3600, None).await.unwrap().id();
        let options = etcd_client::PutOptions::new().with_lease(lease);
        etcd.put("leased", "x", Some(options)).await.unwrap();
        etcd.put("gone", "y", None).await.unwrap();
        let revision = etcd.delete("gone", None).await.unwrap();

        // Taken through a follower: the writes acknowledged by the leader are in it.
        let mut etcd = client(&old, follower).await;
        let mut stream = etcd.snapshot().await.expect("snapshot");
        let mut bytes = Vec::new();
        while let Some(part) = stream.message().await.expect("a snapshot piece") {
            bytes.extend_from_slice(part.blob());
        }
        let (data, digest) = bytes.split_at(bytes.len() - 32);
        assert_eq!(digest, coordinate_server::backup::digest(data));
        assert_eq!(data.len() % 512, 0, "what etcdctl checks");
        std::fs::write(&backup, &bytes).expect("write the backup");
        Before {
            revision: revision.header().unwrap().revision(),
            first_a: first_a.header().unwrap().revision(),
            lease,
        }
    });
    drop(old);

    let mut new = Cluster::prepare(Security::Plain, 3, &[]);
    let damaged = new.dir().join("damaged.db");
    let mut bytes = std::fs::read(&backup).unwrap();
    bytes[10] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let restore = |file: &std::path::Path, id: u64| {
        let mut args = vec!["restore".to_string(), file.display().to_string()];
        args.extend(new.args(id));
        run_to_exit(new.dir(), &args)
    };
    let (status, stderr) = restore(&damaged, 1);
    assert!(!status.success() && stderr.contains("damaged"), "{stderr}");
    for id in new.ids() {
        let (status, stderr) = restore(&backup, id);
        assert!(status.success(), "restore {id}: {stderr}");
    }
    let (status, stderr) = restore(&backup, 1);
    assert!(
        !status.success() && stderr.contains("is not empty"),
        "{stderr}"
    );

    for id in new.ids() {
        new.start_node(id);
    }
    let leader = new.wait_for_leader();
    rt.block_on(async {
        let mut etcd = client(&new, leader).await;
        let now = etcd.get("a", None).await.unwrap();
        assert_eq!(now.header().unwrap().revision(), before.revision);
        assert_eq!(now.kvs()[0].value(), b"2");
        let then = etcd
            .get("a", Some(GetOptions::new().with_revision(before.first_a)))
            .await
            .expect("the history is kept");
        assert_eq!(then.kvs()[0].value(), b"1");
        assert_eq!(etcd.get("gone", None).await.unwrap().count(), 0);
        let ttl = etcd
            .lease_time_to_live(
                before.lease,
                Some(LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .expect("the lease is kept");
        assert_eq!(ttl.keys(), [b"leased".to_vec()]);
        assert!(ttl.ttl() > 0, "{ttl:?}");
        let members = etcd.member_list().await.unwrap();
        let mut want = new.peer_urls().to_vec();
        want.sort();
        assert_eq!(
            common::listed_peer_urls(&members),
            want,
            "the new cluster's members"
        );
        let after = etcd.put("a", "3", None).await.unwrap();
        assert_eq!(after.header().unwrap().revision(), before.revision + 1);
    });
}

/// A node that holds no state yet (`--join`, not added) refuses a backup with an error, and
/// serves on.
#[test]
fn a_node_without_state_refuses_a_backup() {
    let (mut c, _) =
        Cluster::start_with_leader_as(Security::Plain, 1, &["--request-timeout-ms", "500"]);
    let (id, _) = c.add_node_slot();
    c.start_joining(id);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ready = common::wait_until(common::WAIT_TIMEOUT, || {
            std::net::TcpStream::connect(c.endpoint(id)).is_ok()
        });
        assert!(ready, "node {id} does not listen");
        let mut etcd = client(&c, id).await;
        let got = match etcd.snapshot().await {
            Err(e) => Err(e),
            Ok(mut stream) => stream.message().await.map(|_| ()),
        };
        assert!(got.is_err(), "a backup from a node with no state");
    });
    c.check_alive();
}
