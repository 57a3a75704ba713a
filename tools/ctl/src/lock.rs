//! `coordinatectl lock` and `coordinatectl elect`: etcd's `concurrency` recipes on leases,
//! transactions on create revisions, and watches.
//!
//! ## The recipe (a lock and an election are the same queue)
//! 1. Grant a lease (`--ttl`, default 10 s) and keep it alive in the background
//!    ([`crate::lease::Keeper`]).
//! 2. Create `<name>/<lease id in hex>` attached to the lease, with a transaction that puts
//!    it only if it does not exist (`create_revision == 0`): repeating it after an unknown
//!    outcome cannot write twice. Its `create_revision` is our place in the queue.
//! 3. The key under `<name>/` with the smallest `create_revision` holds the lock (leads).
//!    If it is ours, we hold it. Otherwise watch the one just ahead of us (the largest
//!    `create_revision` below ours: `max_create_revision = ours - 1`, sorted descending,
//!    limit 1) until it is deleted — its owner released it, or its lease expired — and go
//!    back to 3: never assume that its deletion made us the holder (one further ahead may
//!    still hold it). Watching only the predecessor wakes one waiter per release, not all.
//! 4. Holding it: until interrupted, until the command (`-- cmd args`) ends, or until the
//!    lease is lost — the keeper finds it gone, or our key is deleted (a watch on it) — and
//!    then the holder must stop acting as one: the command is killed.
//! 5. Always revoke the lease on the way out: the key goes at once, and the next waiter's
//!    watch fires. A holder that dies without revoking (`kill -9`) loses the lock when its
//!    lease expires: within its TTL plus an election timeout.
//!
//! `elect <name> <proposal>` campaigns with the proposal as the key's value and leads while
//! it holds the "lock"; `elect <name>` (or `--listen`) observes: it prints the value of the
//! key with the smallest `create_revision` under `<name>/`, and again whenever that changes.

use std::process::ExitStatus;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::lease::Keeper;
use super::{failed, Exit, Failed, Interrupts, Options, Out};
use coordinate_client::{
    Client, CompareOp, Error, EventKind, KeyValue, RangeOptions, RangeResponse, SortOrder,
    SortTarget, Target, Txn, TxnOp,
};

/// How often an unknown outcome of the creating transaction is retried.
const CREATE_ATTEMPTS: usize = 3;
/// The pause before reading or watching again after a watch broke.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);
/// Exit code after SIGINT or SIGTERM before the lock was held (128 + SIGINT, like shells).
const INTERRUPTED: u8 = 130;
/// Exit code when the command cannot be started (like shells).
const CANNOT_RUN: u8 = 127;

/// Our place in the queue under a name.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    create_revision: u64,
    lease: i64,
}

/// A lease kept alive for one campaign, with the signals caught before it was granted.
struct Session {
    client: Client,
    keeper: Keeper,
    stop: Interrupts,
    lease: i64,
}

impl Session {
    async fn open(opts: &Options, ttl: i64) -> Result<Session, Failed> {
        let stop = Interrupts::catch();
        let mut client = opts.client();
        let grant = client.grant_lease(ttl, 0).await.map_err(failed)?;
        let keeper_client = opts.client();
        Ok(Session {
            client,
            keeper: Keeper::start(keeper_client, grant.id, grant.ttl),
            stop,
            lease: grant.id,
        })
    }

    /// Revokes the lease (best effort: if it fails, the lease expires by itself).
    async fn close(self) {
        let Session {
            mut client,
            keeper,
            lease,
            ..
        } = self;
        drop(keeper);
        match client.revoke_lease(lease).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(hyper::StatusCode::NOT_FOUND) => {}
            Err(e) => {
                eprintln!("coordinatectl: revoking lease {lease}: {e} (it expires by itself)")
            }
        }
    }

    /// Waits in the queue of `name` until first; fails if the lease is lost or on a signal.
    async fn acquire(&mut self, name: &str, value: Bytes) -> Result<Entry, Failed> {
        let prefix = format!("{name}/");
        let lease = self.lease;
        let client = &mut self.client;
        tokio::select! {
            r = async {
                let entry = enqueue(client, &prefix, value, lease).await?;
                wait_first(client, &prefix, &entry).await?;
                Ok(entry)
            } => r,
            why = self.keeper.lost() => {
                Err(Failed::new(Exit::Refused, format!("waiting for {name}: {why}")))
            }
            _ = self.stop.wait() => Err(Failed::with_code(
                INTERRUPTED,
                format!("interrupted while waiting for {name}"),
            )),
        }
    }

    /// Why the hold of `entry` ended, if not by a signal: the lease or the key is gone.
    async fn lost(&mut self, entry: &Entry) -> String {
        tokio::select! {
            why = self.keeper.lost() => why,
            () = until_deleted(&mut self.client, &entry.key, entry.create_revision) => {
                format!("{} was deleted", entry.key)
            }
        }
    }

    /// Holds until a signal (success) or until the hold is lost (failure).
    async fn hold(&mut self, entry: &Entry, what: &str) -> Result<(), Failed> {
        let stop = self.stop.clone();
        tokio::select! {
            why = self.lost(entry) => Err(Failed::new(Exit::Refused, format!("lost {what}: {why}"))),
            _ = stop.wait() => Ok(()),
        }
    }

    /// Runs `command` while holding `entry`; its exit status is ours.
    async fn run_holding(&mut self, entry: &Entry, command: &[String]) -> Result<(), Failed> {
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .env("COORDINATE_LOCK_KEY", &entry.key)
            .env("COORDINATE_LOCK_REV", entry.create_revision.to_string())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Failed::with_code(CANNOT_RUN, format!("cannot run {:?}: {e}", command[0]))
            })?;
        let stop = self.stop.clone();
        let (code, why) = tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(s) => command_status(s),
                    Err(e) => Err(Failed::new(Exit::Unavailable, format!("waiting for the command: {e}"))),
                };
            }
            why = self.lost(entry) => (
                Exit::Refused as u8,
                format!("lost the lock {}: {why}; killed the command", entry.key),
            ),
            _ = stop.wait() => (INTERRUPTED, "interrupted; killed the command".to_string()),
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        Err(Failed::with_code(code, why))
    }
}

/// `lock <name> [--ttl N] [-- cmd args...]`.
pub(super) async fn lock(
    opts: &Options,
    out: &Out,
    name: &str,
    ttl: i64,
    command: &[String],
) -> Result<(), Failed> {
    let mut session = Session::open(opts, ttl).await?;
    let result = async {
        let entry = session.acquire(name, Bytes::new()).await?;
        if command.is_empty() {
            print_entry(out, &entry, None);
            session.hold(&entry, "the lock").await
        } else {
            session.run_holding(&entry, command).await
        }
    }
    .await;
    session.close().await;
    result
}

/// `elect <name> <proposal>`: campaign, print the proposal once elected, lead until
/// interrupted or the lease is lost.
pub(super) async fn campaign(
    opts: &Options,
    out: &Out,
    name: &str,
    proposal: &str,
    ttl: i64,
) -> Result<(), Failed> {
    let mut session = Session::open(opts, ttl).await?;
    let value = Bytes::from(proposal.to_string());
    let result = async {
        let entry = session.acquire(name, value).await?;
        print_entry(out, &entry, Some(proposal.as_bytes()));
        session
            .hold(&entry, &format!("the leadership of {name}"))
            .await
    }
    .await;
    session.close().await;
    result
}

/// Step 2: create our key if absent and read its create revision.
async fn enqueue(
    client: &mut Client,
    prefix: &str,
    value: Bytes,
    lease: i64,
) -> Result<Entry, Failed> {
    let key = format!("{prefix}{lease:x}");
    let txn = Txn {
        compare: vec![(key.clone(), Target::CreateRevision(0), CompareOp::Eq)],
        success: vec![TxnOp::PutWithLease {
            key: key.clone(),
            value,
            lease,
        }],
        failure: vec![],
    };
    let mut attempt = 1;
    loop {
        match client.txn(&txn).await {
            Ok(_) => break,
            // Create-if-absent can be repeated without writing twice.
            Err(e) if e.outcome_unknown() && attempt < CREATE_ATTEMPTS => attempt += 1,
            Err(e) => return Err(failed(e)),
        }
    }
    let Some(got) = client.get(&key, Default::default()).await.map_err(failed)? else {
        return Err(Failed::new(
            Exit::Refused,
            format!("{key} is gone: lease {lease} expired or was revoked"),
        ));
    };
    Ok(Entry {
        key,
        create_revision: got.kv.create_revision,
        lease,
    })
}

/// A range read of the queue, repeated while no endpoint can serve it (an election, a
/// restarting node): whether the lease survives that is the keeper's to say, and the
/// caller's `select!` ends the wait when it does not.
async fn read_queue(
    client: &mut Client,
    prefix: &str,
    options: &RangeOptions,
) -> Result<RangeResponse, Failed> {
    loop {
        match client.range(prefix, options).await {
            Ok(r) => return Ok(r),
            Err(Error::Call(e)) => {
                eprintln!("coordinatectl: reading {prefix}: {e}; retrying");
                tokio::time::sleep(REWATCH_PAUSE).await;
            }
            Err(e) => return Err(failed(e)),
        }
    }
}

/// The queue's first key under `prefix`, and the revision it was read at.
async fn first(client: &mut Client, prefix: &str) -> Result<(Option<KeyValue>, u64), Failed> {
    let options = RangeOptions {
        limit: Some(1),
        sort: Some((SortTarget::CreateRevision, SortOrder::Ascend)),
        ..RangeOptions::default()
    };
    let r = read_queue(client, prefix, &options).await?;
    Ok((r.kvs.into_iter().next(), r.revision))
}

/// Step 3: returns once `entry` is the first of the queue.
async fn wait_first(client: &mut Client, prefix: &str, entry: &Entry) -> Result<(), Failed> {
    loop {
        match first(client, prefix).await?.0 {
            Some(kv) if kv.key == entry.key => return Ok(()),
            Some(_) => {}
            None => {
                return Err(Failed::new(
                    Exit::Refused,
                    format!("{} is gone: lease {} was lost", entry.key, entry.lease),
                ))
            }
        }
        if entry.create_revision <= 1 {
            continue;
        }
        let options = RangeOptions {
            limit: Some(1),
            keys_only: true,
            max_create_revision: Some(entry.create_revision - 1),
            sort: Some((SortTarget::CreateRevision, SortOrder::Descend)),
            ..RangeOptions::default()
        };
        let ahead = read_queue(client, prefix, &options).await?;
        if let Some(kv) = ahead.kvs.first() {
            wait_deleted(client, &kv.key, ahead.revision + 1).await;
        }
    }
}

/// Returns once `key` was deleted at or after `from_revision`, or the watch broke (the
/// caller reads the queue again either way).
async fn wait_deleted(client: &mut Client, key: &str, from_revision: u64) {
    let mut watch = match client.watch(key, false, from_revision).await {
        Ok(w) => w,
        Err(_) => return tokio::time::sleep(REWATCH_PAUSE).await,
    };
    loop {
        match watch.next().await {
            Ok(Some(ev)) if ev.kind == EventKind::Delete => return,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return tokio::time::sleep(REWATCH_PAUSE).await,
        }
    }
}

/// Returns only once `key` is deleted (after `from_revision`): a broken watch is reopened
/// after a read that confirms the key still exists.
async fn until_deleted(client: &mut Client, key: &str, mut from_revision: u64) {
    loop {
        wait_deleted(client, key, from_revision).await;
        match client.get(key, Default::default()).await {
            Ok(None) => return,
            Ok(Some(got)) => from_revision = got.revision + 1,
            // Unreachable cluster: the keeper decides when the lease counts as lost.
            Err(_) => tokio::time::sleep(REWATCH_PAUSE).await,
        }
    }
}

/// The command's exit status as ours: its code, or 128 + the signal that killed it.
fn command_status(status: ExitStatus) -> Result<(), Failed> {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(Failed::with_code(
            u8::try_from(code).unwrap_or(1),
            format!("the command exited with status {code}"),
        )),
        (None, Some(sig)) => Err(Failed::with_code(
            u8::try_from(128 + sig).unwrap_or(1),
            format!("the command was killed by signal {sig}"),
        )),
        (None, None) => Err(Failed::new(
            Exit::Refused,
            "the command ended without a status",
        )),
    }
}

fn print_entry(out: &Out, entry: &Entry, value: Option<&[u8]>) {
    if out.json {
        let mut doc = json!({
            "key": entry.key,
            "create_revision": entry.create_revision,
            "lease": entry.lease,
        });
        if let Some(v) = value {
            doc["value"] = json!(String::from_utf8_lossy(v));
        }
        out.json(&doc);
    } else {
        match value {
            Some(v) => out.text(&format!("{}\n", String::from_utf8_lossy(v))),
            None => out.text(&format!("{}\n", entry.key)),
        }
    }
}

/// `elect <name> --listen`: print the leader's value now and at every change, until
/// interrupted.
pub(super) async fn observe(opts: &Options, out: &Out, name: &str) -> Result<(), Failed> {
    let stop = Interrupts::catch();
    let mut client = opts.client();
    let prefix = format!("{name}/");
    let mut shown: Option<(String, u64)> = None;
    let follow = async {
        loop {
            let revision = show_leader(&mut client, out, &prefix, &mut shown).await?;
            let Ok(mut watch) = client.watch(&prefix, true, revision + 1).await else {
                tokio::time::sleep(REWATCH_PAUSE).await;
                continue;
            };
            while let Ok(Some(_)) = watch.next().await {
                show_leader(&mut client, out, &prefix, &mut shown).await?;
            }
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    };
    tokio::select! {
        r = follow => r,
        _ = stop.wait() => Ok(()),
    }
}

/// Prints the leader if it is not the one `shown`; the revision the queue was read at.
async fn show_leader(
    client: &mut Client,
    out: &Out,
    prefix: &str,
    shown: &mut Option<(String, u64)>,
) -> Result<u64, Failed> {
    let (leader, revision) = first(client, prefix).await?;
    let Some(kv) = leader else {
        return Ok(revision);
    };
    let now = Some((kv.key.clone(), kv.mod_revision));
    if *shown != now {
        *shown = now;
        let entry = Entry {
            key: kv.key,
            create_revision: kv.create_revision,
            lease: kv.lease,
        };
        print_entry(out, &entry, Some(&kv.value));
    }
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn the_command_status_is_ours() {
        assert!(command_status(ExitStatus::from_raw(0)).is_ok());
        // A wait status: exit code in the high byte, signal in the low bits.
        let exited = command_status(ExitStatus::from_raw(7 << 8)).unwrap_err();
        assert_eq!(exited.code(), 7);
        let killed = command_status(ExitStatus::from_raw(9)).unwrap_err();
        assert_eq!(killed.code(), 128 + 9);
        assert!(killed.message.contains("signal 9"), "{}", killed.message);
    }
}
