//! `coordinatectl lease grant|revoke|keep-alive|ttl|list`, `compact` and `alarm list|disarm`,
//! and the [`Keeper`] that keeps a lease alive in the background for `lock` and `elect`.
//!
//! ## Keeping a lease alive
//! A keep-alive goes out every TTL/3 (at least every [`MIN_INTERVAL`]); a failed one is
//! retried every [`RETRY_INTERVAL`]. The lease is given up as lost when the server says it is
//! gone (`404`), or when no keep-alive succeeded for a whole TTL counted from the moment the
//! last successful one was *sent*: by then the leader may have expired it, and a holder must
//! not act as if it still held it. (The server never expires a lease earlier than a TTL after
//! the last acknowledged keep-alive, so this side gives up first.)

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{failed, Exit, Failed, Interrupts, Out};
use coordinate_client::Client;

/// The shortest time between two keep-alives.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// The time between two attempts when a keep-alive failed.
pub(crate) const RETRY_INTERVAL: Duration = Duration::from_millis(300);

/// How long to wait between keep-alives of a lease of `ttl` seconds.
pub(crate) fn interval(ttl: i64) -> Duration {
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    (ttl / 3).max(MIN_INTERVAL)
}

/// A lease kept alive by a background task until the keeper is dropped.
pub(crate) struct Keeper {
    lost: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Keeper {
    /// Starts keeping lease `id` (granted with `ttl` seconds) alive through `client`.
    pub(crate) fn start(client: Client, id: i64, ttl: i64) -> Keeper {
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(keep(client, id, ttl, tx));
        Keeper { lost, task }
    }

    /// Resolves, with the reason, once the lease is lost.
    pub(crate) async fn lost(&mut self) -> String {
        loop {
            if let Some(why) = self.lost.borrow_and_update().clone() {
                return why;
            }
            if self.lost.changed().await.is_err() {
                return "the keep-alive task ended".into();
            }
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep(mut client: Client, id: i64, mut ttl: i64, lost: watch::Sender<Option<String>>) {
    let mut last_ok = Instant::now();
    let mut wait = interval(ttl);
    loop {
        tokio::time::sleep(wait).await;
        let sent = Instant::now();
        // However long one attempt takes, the lease counts as lost a TTL after the last
        // successful keep-alive was sent.
        let deadline = last_ok + Duration::from_secs(ttl.max(1) as u64);
        match tokio::time::timeout_at(deadline, client.keep_alive(id)).await {
            Ok(Ok(Some(t))) => {
                last_ok = sent;
                ttl = t;
                wait = interval(ttl);
            }
            Ok(Ok(None)) => {
                let _ = lost.send(Some(format!("lease {id} expired or was revoked")));
                return;
            }
            Ok(Err(_)) if Instant::now() < deadline => wait = RETRY_INTERVAL,
            Ok(Err(e)) => {
                let why = format!("lease {id}: no keep-alive succeeded for {ttl} s (TTL): {e}");
                let _ = lost.send(Some(why));
                return;
            }
            Err(_) => {
                let why = format!("lease {id}: no keep-alive succeeded for {ttl} s (TTL)");
                let _ = lost.send(Some(why));
                return;
            }
        }
    }
}

pub(super) async fn grant(client: &mut Client, out: &Out, ttl: i64, id: i64) -> Result<(), Failed> {
    let g = client.grant_lease(ttl, id).await.map_err(failed)?;
    if out.json {
        out.json(&json!({ "id": g.id, "ttl": g.ttl }));
    } else {
        out.text(&format!("{}\n", g.id));
    }
    Ok(())
}

pub(super) async fn revoke(client: &mut Client, out: &Out, id: i64) -> Result<(), Failed> {
    let d = client.revoke_lease(id).await.map_err(failed)?;
    if out.json {
        out.json(&json!({ "deleted": d.deleted, "revision": d.revision }));
    } else {
        let keys = if d.deleted == 1 { "key" } else { "keys" };
        out.text(&format!(
            "revoked lease {id}: deleted {} {keys} (revision {})\n",
            d.deleted, d.revision
        ));
    }
    Ok(())
}

/// `lease keep-alive`: every TTL/3 until interrupted (or once), one line per renewal. A
/// failed keep-alive is retried until a TTL passed since the last successful one was sent;
/// then, or once the lease is gone, it fails.
pub(super) async fn keep_alive(
    client: &mut Client,
    out: &Out,
    id: i64,
    once: bool,
) -> Result<(), Failed> {
    let stop = Interrupts::catch();
    let gone = || Failed::new(Exit::Refused, format!("lease {id} expired or was revoked"));
    let renewals = async {
        let mut last_ok: Option<(Instant, i64)> = None;
        loop {
            let sent = Instant::now();
            let ttl = match client.keep_alive(id).await {
                Ok(ttl) => ttl.ok_or_else(gone)?,
                Err(e) => match last_ok {
                    Some((at, ttl)) if !once && at.elapsed() < Duration::from_secs(ttl as u64) => {
                        eprintln!("coordinatectl: keeping lease {id} alive: {e}; retrying");
                        tokio::time::sleep(RETRY_INTERVAL).await;
                        continue;
                    }
                    _ => return Err(failed(e)),
                },
            };
            last_ok = Some((sent, ttl));
            if out.json {
                out.json(&json!({ "id": id, "ttl": ttl }));
            } else {
                out.text(&format!("lease {id} kept alive with TTL {ttl}\n"));
            }
            if once {
                return Ok(());
            }
            tokio::time::sleep(interval(ttl)).await;
        }
    };
    tokio::select! {
        r = renewals => r,
        _ = stop.wait() => Ok(()),
    }
}

pub(super) async fn time_to_live(
    client: &mut Client,
    out: &Out,
    id: i64,
    keys: bool,
) -> Result<(), Failed> {
    let Some(t) = client.time_to_live(id, keys).await.map_err(failed)? else {
        return Err(Failed::new(Exit::Refused, format!("lease {id} not found")));
    };
    if out.json {
        let mut doc = json!({
            "id": t.id, "ttl": t.ttl, "granted_ttl": t.granted_ttl, "revision": t.revision,
        });
        if keys {
            doc["keys"] = json!(t.keys);
        }
        out.json(&doc);
        return Ok(());
    }
    let mut text = format!(
        "lease {id}: {} s left of {} s granted\n",
        t.ttl, t.granted_ttl
    );
    for key in &t.keys {
        text.push_str(&format!("  {key}\n"));
    }
    out.text(&text);
    Ok(())
}

pub(super) async fn list(client: &mut Client, out: &Out) -> Result<(), Failed> {
    let l = client.leases().await.map_err(failed)?;
    if out.json {
        out.json(&json!({ "leases": l.leases, "revision": l.revision }));
    } else {
        let text: String = l.leases.iter().map(|id| format!("{id}\n")).collect();
        out.text(&text);
    }
    Ok(())
}

pub(super) async fn compact(client: &mut Client, out: &Out, revision: u64) -> Result<(), Failed> {
    let rev = client.compact(revision).await.map_err(failed)?;
    if out.json {
        out.json(&json!({ "compact_revision": rev }));
    } else {
        out.text(&format!("compacted the history before revision {rev}\n"));
    }
    Ok(())
}

pub(super) async fn alarms(client: &mut Client, out: &Out, disarm: bool) -> Result<(), Failed> {
    let alarms = if disarm {
        client.disarm().await.map_err(failed)?
    } else {
        client.alarms().await.map_err(failed)?.alarms
    };
    if out.json {
        let list: Vec<_> = alarms
            .iter()
            .map(|a| json!({ "member": a.member, "alarm": a.alarm }))
            .collect();
        out.json(&json!({ "alarms": list }));
        return Ok(());
    }
    let mut text: String = alarms
        .iter()
        .map(|a| format!("member {}: {}\n", a.member, a.alarm))
        .collect();
    if disarm {
        text.push_str(&format!(
            "disarmed NOSPACE ({} alarms left)\n",
            alarms.len()
        ));
    }
    out.text(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_go_out_every_third_of_the_ttl() {
        assert_eq!(interval(9), Duration::from_secs(3));
        assert_eq!(interval(10), Duration::from_nanos(3_333_333_333));
        // Short TTLs are still renewed, not hammered.
        assert_eq!(interval(1), MIN_INTERVAL);
        assert_eq!(interval(0), MIN_INTERVAL);
    }
}
