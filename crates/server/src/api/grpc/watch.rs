//! etcd's Watch service: one bidirectional stream carrying many watchers, over
//! [`crate::service::WatchService`].
//!
//! A stream's requests are read by one task, in order: a create is answered `created` (with
//! the client's watch id, or the next free one from 0) before any event of that watcher, then
//! the watcher runs in a task of its own; a cancel ends that task and is answered `canceled`.
//! Every answer goes through one bounded queue to the client, so a client that stops reading
//! holds its watchers back (the watch hub then moves them to the history), never memory.
//! A watcher's events are sent as soon as the last event of a revision is rendered, one
//! revision per response, or several while it catches up (up to [`RESPONSE_BYTES`], as etcd
//! batches a catching-up watcher's events); a watcher that asked for `fragment` gets a
//! revision over [`FRAGMENT_BYTES`] cut into several responses, all but the last marked
//! `fragment`. A start before the compaction point is answered `created`, then `canceled` with `compact_revision` (the
//! oldest revision still held), as etcd does.
//!
//! **Progress**, with etcd's (3.4.31 / 3.5.13) meaning: a progress notification at revision
//! R promises that every event up to R was sent before it.
//! - `RequestProgress` is answered at once, with watch id -1 and the lowest revision every
//!   watcher of the stream is synced to (capped at the applied revision; with no watcher,
//!   the applied revision). Each watcher's synced revision advances only after it sent
//!   everything up to it, through the same queue (`service::watch`, progress). etcd waits
//!   until every watcher has caught up instead; a client asking for a revision asks again.
//! - `progress_notify` on a create: after `--experimental-watch-progress-notify-interval`
//!   without an event, a synced watcher gets an empty response at the applied revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::mvccpb;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use super::kv::kv;
use super::status::{self, COMPACTED, NO_LEADER};
use super::watch_wire::{encode_event, Answer};
use super::Grpc;
use crate::kv::{Event, KeyRange};
use crate::service::{Rejection, ServiceError, WatchItem, WatchRequest};

/// Answers queued for one stream's client before its watchers wait.
const STREAM_QUEUE: usize = 64;
/// The most bytes of events in one response of a watcher that asked for `fragment` (etcd's
/// default `--max-request-bytes`, the size etcd fragments at).
pub const FRAGMENT_BYTES: usize = 3 << 19;
/// Bytes of keys and values past which a watcher catching up sends what it has gathered
/// (whole revisions: a revision is never split unless the watcher asked for `fragment`).
const RESPONSE_BYTES: usize = 64 << 10;
/// The watch id of an answer to `RequestProgress`: it is for every watcher of the stream.
const EVERY_WATCHER: i64 = -1;

/// A stream's answers, as `watch_wire` sends them.
pub(super) type Answers = std::pin::Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

impl Grpc {
    /// Serves one watch stream (`watch_wire` calls it).
    pub(super) async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Answers>, Status> {
        // etcd's `hasleader` metadata: refuse the stream while no leader is known.
        let wants_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants_leader && self.services.status.leader() == 0 {
            return Err(Status::unavailable(NO_LEADER));
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = WatchStream {
            grpc: self.clone(),
            tx,
            watchers: Arc::new(Mutex::new(HashMap::new())),
            next_id: 0,
        };
        tokio::spawn(stream.serve(request.into_inner()));
        // The stream ends after an error (tonic sends it as the call's status).
        let answers = futures_util::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await? {
                Ok(answer) => Some((Ok(answer), Some(rx))),
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// One client stream: its queue of answers and its running watchers by id.
struct WatchStream {
    grpc: Grpc,
    /// The stream's answers; an error is its last (the client's requests broke).
    tx: mpsc::Sender<Result<Answer, Status>>,
    watchers: Arc<Mutex<HashMap<i64, Running>>>,
    /// The next watch id to hand out (client-chosen ids are skipped).
    next_id: i64,
}

/// A watcher's task, and how far it has sent everything.
struct Running {
    task: JoinHandle<()>,
    synced: Arc<AtomicU64>,
}

impl WatchStream {
    /// Reads requests until the client closes its side; the watchers run on until the client
    /// goes away (their answers then fail to send). A request that does not decode stops
    /// every watcher of the stream and ends it with the decoding error, as etcd's does.
    async fn serve(mut self, mut requests: Streaming<pb::WatchRequest>) {
        use pb::watch_request::RequestUnion;
        while let Some(next) = requests.next().await {
            let req = match next {
                Ok(req) => req,
                Err(status) => {
                    for (_, running) in self.watchers.lock().await.drain() {
                        running.task.abort();
                    }
                    let _ = self.tx.send(Err(status)).await;
                    break;
                }
            };
            let delivered = match req.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => self.progress().await,
                None => true,
            };
            if !delivered {
                break;
            }
        }
    }

    /// Creates a watcher; false once the client is gone.
    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        let id = match create.watch_id {
            0 => self.fresh_id().await,
            chosen => chosen,
        };
        if self.watchers.lock().await.contains_key(&id) {
            let refused = pb::WatchResponse {
                header: Some(self.grpc.current_header()),
                watch_id: id,
                created: true,
                canceled: true,
                cancel_reason: "etcdserver: duplicate watch ID".into(),
                ..Default::default()
            };
            return self.tx.send(Ok(Answer::of(refused))).await.is_ok();
        }
        let prev_kv = create.prev_kv;
        let fragment = create.fragment;
        let started = self.grpc.services.watch.watch(watch_request(&create)).await;
        // A watch from now reports what follows the revision its answer names, as etcd's.
        let header = match &started {
            Ok(watcher) if create.start_revision <= 0 => self.grpc.header(watcher.start() - 1),
            _ => self.grpc.current_header(),
        };
        let created = pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if self.tx.send(Ok(Answer::of(created))).await.is_err() {
            return false;
        }
        let mut watcher = match started {
            Ok(watcher) => watcher,
            Err(e) => {
                let refused = Answer::of(self.refusal(id, e));
                return self.tx.send(Ok(refused)).await.is_ok();
            }
        };
        if create.progress_notify {
            watcher.notify_progress(self.grpc.progress_interval);
        }
        let synced = watcher.synced();
        let grpc = self.grpc.clone();
        let tx = self.tx.clone();
        let watchers = self.watchers.clone();
        let task = tokio::spawn(async move {
            let mut events = Vec::new();
            let mut bytes = 0;
            'serve: loop {
                // Encoded once for every watcher of the event (slot 1: with the previous
                // key), then only copied into each answer.
                let item = watcher
                    .next(|e, position| {
                        let slot = usize::from(prev_kv);
                        let encoded = e.encoded(slot, |e| encode_event(&render(e, prev_kv)));
                        (encoded, position.last)
                    })
                    .await;
                let answers = match item {
                    Some(WatchItem::Event((event, last))) => {
                        bytes += event.len();
                        events.push(event);
                        // Whole revisions; more of them while the watcher catches up.
                        let more = watcher.has_pending() && bytes < RESPONSE_BYTES;
                        if !last || more {
                            continue;
                        }
                        bytes = 0;
                        let header = grpc.current_header();
                        responses(id, header, std::mem::take(&mut events), fragment)
                    }
                    Some(WatchItem::Progress { revision }) => vec![Answer::of(pb::WatchResponse {
                        header: Some(grpc.header(revision)),
                        watch_id: id,
                        ..Default::default()
                    })],
                    Some(WatchItem::Compacted {
                        compact_revision, ..
                    }) => vec![Answer::of(canceled(&grpc, id, compact_revision))],
                    None => break,
                };
                for answer in answers {
                    if tx.send(Ok(answer)).await.is_err() {
                        break 'serve;
                    }
                }
            }
            watchers.lock().await.remove(&id);
        });
        self.watchers
            .lock()
            .await
            .insert(id, Running { task, synced });
        true
    }

    /// Answers `RequestProgress`: every event up to the revision it names was sent before
    /// it. False once the client is gone.
    async fn progress(&self) -> bool {
        let applied = self.grpc.services.watch.applied_revision();
        let synced = self
            .watchers
            .lock()
            .await
            .values()
            .map(|w| w.synced.load(Ordering::Acquire))
            .min()
            .unwrap_or(applied)
            .min(applied);
        let answer = pb::WatchResponse {
            header: Some(self.grpc.header(synced)),
            watch_id: EVERY_WATCHER,
            ..Default::default()
        };
        self.tx.send(Ok(Answer::of(answer))).await.is_ok()
    }

    /// The lowest id from `next_id` on that no watcher of the stream holds.
    async fn fresh_id(&mut self) -> i64 {
        let watchers = self.watchers.lock().await;
        while watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Ends watcher `id` and says so (an unknown id gets no answer, as from etcd); false
    /// once the client is gone.
    async fn cancel(&mut self, id: i64) -> bool {
        let Some(running) = self.watchers.lock().await.remove(&id) else {
            return true;
        };
        running.task.abort();
        let answer = pb::WatchResponse {
            header: Some(self.grpc.current_header()),
            watch_id: id,
            canceled: true,
            ..Default::default()
        };
        self.tx.send(Ok(Answer::of(answer))).await.is_ok()
    }

    /// The answer to a watch that could not start.
    fn refusal(&self, id: i64, e: ServiceError) -> pb::WatchResponse {
        match e {
            ServiceError::Rejected(Rejection::Compacted { oldest, .. }) => {
                canceled(&self.grpc, id, oldest)
            }
            e => pb::WatchResponse {
                header: Some(self.grpc.current_header()),
                watch_id: id,
                canceled: true,
                cancel_reason: status::status(e).message().to_string(),
                ..Default::default()
            },
        }
    }
}

/// The responses carrying gathered events (whole revisions, each encoded): one, or for a
/// watcher that asked for `fragment`, as many as keep each under [`FRAGMENT_BYTES`] (at least
/// one event each), all but the last marked `fragment`.
fn responses(
    id: i64,
    header: pb::ResponseHeader,
    events: Vec<Bytes>,
    fragment: bool,
) -> Vec<Answer> {
    let response = |events, fragment| Answer {
        head: pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            fragment,
            ..Default::default()
        },
        events,
    };
    if !fragment {
        return vec![response(events, false)];
    }
    let mut out = Vec::new();
    let mut part = Vec::new();
    let mut bytes = 0;
    for event in events {
        if !part.is_empty() && bytes + event.len() > FRAGMENT_BYTES {
            out.push(response(std::mem::take(&mut part), true));
            bytes = 0;
        }
        bytes += event.len();
        part.push(event);
    }
    out.push(response(part, false));
    out
}

/// A watcher ended because its next revision was compacted away.
fn canceled(grpc: &Grpc, id: i64, compact_revision: u64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(grpc.current_header()),
        watch_id: id,
        canceled: true,
        compact_revision: compact_revision as i64,
        cancel_reason: COMPACTED.into(),
        ..Default::default()
    }
}

/// etcd's create request as the service's.
fn watch_request(create: &pb::WatchCreateRequest) -> WatchRequest {
    use pb::watch_create_request::FilterType;
    let range = KeyRange::from_etcd(
        Bytes::copy_from_slice(&create.key),
        Bytes::copy_from_slice(&create.range_end),
    );
    let filters: Vec<FilterType> = create.filters().collect();
    WatchRequest {
        no_put: filters.contains(&FilterType::Noput),
        no_delete: filters.contains(&FilterType::Nodelete),
        ..WatchRequest::new(range, create.start_revision.max(0) as u64)
    }
}

/// An event as etcd shows it.
fn render(e: &Event, prev_kv: bool) -> mvccpb::Event {
    let kind = match e.deleted {
        true => mvccpb::event::EventType::Delete,
        false => mvccpb::event::EventType::Put,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv(e.kv.clone())),
        prev_kv: e.prev.clone().filter(|_| prev_kv).map(kv),
    }
}
