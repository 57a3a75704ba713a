//! Watchers under load (`--watchers N --watch-streams M`, with `--target grpc`): N etcd
//! watchers of the whole key space, spread evenly over M watch streams multiplexed on one
//! HTTP/2 connection to the first endpoint (as an etcd client such as Kubernetes' apiserver
//! holds them), opened before the load starts and checked after it ends.
//!
//! Every revision the load creates is one put, so a watcher that started at revision S must
//! receive every revision after S, each once, in order. Each watcher counts what it got: its
//! first revision (at most one past the revision its `created` answer names), its last, and
//! every gap (revisions skipped) or step back. After the load, the current revision R is read;
//! the watchers then have `--watch-drain` to reach R. A watcher is complete if it reached R
//! with no gap and no step back, and was never canceled or cut off.

use std::collections::HashMap;
use std::time::Duration;

use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::kv_client::KvClient;
use coordinate_etcd_api::etcdserverpb::watch_client::WatchClient;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// How long the watchers may take to be created.
const CREATE_WITHIN: Duration = Duration::from_secs(30);

/// What one watcher saw.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// Whether its `created` answer came.
    created: bool,
    /// The revision its `created` answer named.
    created_at: u64,
    first: Option<u64>,
    last: u64,
    events: u64,
    /// Revisions skipped between two events.
    missing: u64,
    /// Events at or before the revision of the event before them.
    backwards: u64,
}

impl Tally {
    fn event(&mut self, revision: u64) {
        self.events += 1;
        match self.first {
            None => self.first = Some(revision),
            Some(_) if revision <= self.last => {
                self.backwards += 1;
                return;
            }
            Some(_) => self.missing += revision - self.last - 1,
        }
        self.last = revision;
    }
}

/// The result, as the report shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WatchReport {
    pub watchers: usize,
    pub streams: usize,
    /// The store revision once the load ended: every watcher should reach it.
    pub final_revision: u64,
    /// Watchers that got every revision from their start to `final_revision`, in order.
    pub complete: usize,
    pub events: u64,
    /// Revisions not received: gaps, and what was missing at the end of the drain.
    pub missing: u64,
    pub out_of_order: u64,
    /// Watchers whose stream ended or that were canceled.
    pub cut_off: usize,
    /// Watchers whose first event was later than one past their `created` revision.
    pub late_start: usize,
    /// Seconds from the end of the load until the last watcher reached `final_revision` (or
    /// the drain ran out).
    pub drain_seconds: f64,
}

/// Open watch streams, counting.
pub struct Watchers {
    kv: KvClient<Channel>,
    streams: Vec<JoinHandle<Vec<(Tally, bool)>>>,
    /// The revision every watcher is to reach, once known.
    target: watch::Sender<u64>,
    watchers: usize,
}

/// Opens `n` watchers of every key over `m` streams to `addr`, and waits until each is created.
pub async fn open(addr: &str, n: usize, m: usize) -> Result<Watchers, String> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("endpoint {addr:?}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let (target, _) = watch::channel(u64::MAX);
    let (created_tx, mut created_rx) = mpsc::channel::<Result<(), String>>(m.max(1));
    let mut streams = Vec::with_capacity(m);
    for i in 0..m {
        let count = n / m + usize::from(i < n % m);
        let client = WatchClient::new(channel.clone());
        streams.push(tokio::spawn(stream(
            client,
            count,
            created_tx.clone(),
            target.subscribe(),
        )));
    }
    drop(created_tx);
    for _ in 0..m {
        match tokio::time::timeout(CREATE_WITHIN, created_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err("a watch stream ended before its watchers were created".into()),
            Err(_) => return Err(format!("watchers not created within {CREATE_WITHIN:?}")),
        }
    }
    Ok(Watchers {
        kv: KvClient::new(channel),
        streams,
        target,
        watchers: n,
    })
}

/// One stream: creates `count` watchers, says so on `created`, then counts their events until
/// each reached the target revision (or the stream ends, or the task is aborted).
async fn stream(
    mut client: WatchClient<Channel>,
    count: usize,
    created: mpsc::Sender<Result<(), String>>,
    mut target: watch::Receiver<u64>,
) -> Vec<(Tally, bool)> {
    let (tx, rx) = mpsc::channel(count.max(1));
    for _ in 0..count {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                },
            )),
        };
        let _ = tx.send(create).await;
    }
    let requests = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut answers = match client.watch(requests).await {
        Ok(a) => a.into_inner(),
        Err(e) => {
            let _ = created.send(Err(format!("open a watch stream: {e}"))).await;
            return Vec::new();
        }
    };
    let mut tallies: HashMap<i64, (Tally, bool)> = HashMap::new();
    let mut announced = false;
    loop {
        let goal = *target.borrow();
        let reached = |t: &Tally| t.last.max(t.created_at) >= goal;
        if announced && tallies.values().all(|(t, cut)| *cut || reached(t)) {
            break;
        }
        let answer = tokio::select! {
            a = answers.message() => a,
            _ = target.changed() => continue,
        };
        let answer = match answer {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                for (_, cut) in tallies.values_mut() {
                    *cut = true;
                }
                break;
            }
        };
        let revision = answer.header.map_or(0, |h| h.revision.max(0) as u64);
        let entry = tallies.entry(answer.watch_id).or_default();
        if answer.created {
            entry.0.created = true;
            entry.0.created_at = revision;
        }
        if answer.canceled {
            entry.1 = true;
        }
        for e in &answer.events {
            let revision = e.kv.as_ref().map_or(0, |kv| kv.mod_revision.max(0) as u64);
            entry.0.event(revision);
        }
        if !announced && tallies.len() >= count && tallies.values().all(|(t, _)| t.created) {
            announced = true;
            let _ = created.send(Ok(())).await;
        }
    }
    drop(tx);
    tallies.into_values().collect()
}

impl Watchers {
    /// After the load: reads the current revision, lets the watchers reach it for at most
    /// `drain`, and tallies.
    pub async fn finish(mut self, drain: Duration) -> Result<WatchReport, String> {
        let now = self
            .kv
            .range(pb::RangeRequest {
                key: vec![0],
                limit: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("read the final revision: {e}"))?;
        let final_revision = now
            .into_inner()
            .header
            .map_or(0, |h| h.revision.max(0) as u64);
        self.target.send_replace(final_revision);
        let started = tokio::time::Instant::now();
        let deadline = started + drain;
        let mut report = WatchReport {
            watchers: self.watchers,
            streams: self.streams.len(),
            final_revision,
            ..Default::default()
        };
        for handle in &mut self.streams {
            let tallies = match tokio::time::timeout_at(deadline, &mut *handle).await {
                Ok(Ok(tallies)) => tallies,
                Ok(Err(_)) | Err(_) => {
                    handle.abort();
                    Vec::new()
                }
            };
            for (t, cut) in tallies {
                report.events += t.events;
                report.out_of_order += t.backwards;
                let short = final_revision.saturating_sub(t.last.max(t.created_at));
                report.missing += t.missing + short;
                report.cut_off += usize::from(cut);
                let late = t.first.is_some_and(|f| f > t.created_at + 1);
                report.late_start += usize::from(late);
                if !cut && !late && t.missing == 0 && t.backwards == 0 && short == 0 {
                    report.complete += 1;
                }
            }
        }
        report.drain_seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_gaps_and_steps_back() {
        let mut t = Tally::default();
        for r in [5, 6, 8, 8, 7, 9] {
            t.event(r);
        }
        assert_eq!(t.first, Some(5));
        assert_eq!(t.last, 9);
        assert_eq!(t.events, 6);
        assert_eq!(t.missing, 1, "7 came only after 8");
        assert_eq!(t.backwards, 2);
    }
}
