//! `coordinatectl watch`: follows `/v1/watch/<key>` until interrupted, and resumes where it
//! left off when the stream breaks.
//!
//! Without `--from-revision`, the watch starts just after the endpoint's current revision
//! (read from `/v1/status` on the same endpoint), so that from its first moment it knows a
//! revision to resume from: a break before the first event loses nothing.
//!
//! When a stream ends — the node stopped, the connection broke, or the server cut off a slow
//! watcher with an `error` event — the watch reconnects (trying the endpoints in order) from
//! the last revision it printed, skipping the events of that revision it already printed (a
//! revision can hold several events: a transaction or a prefix delete). Nothing is printed
//! twice and nothing is skipped. If no endpoint accepts the watch for three times
//! `--timeout`, it gives up with exit code 3 and says which revision to resume from. A start
//! before the server's window of recent events is refused (`410`): exit code 1, with the
//! oldest revision still available.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use super::{output, Exit, Failed, Out};
use coordinate_client::sse::Events;
use coordinate_client::{
    ClientError, Connection, Endpoints, Request, Response, Stream, ERROR_BODY_LIMIT,
};

/// Where the watch stands: which events were printed, so a new stream can skip them.
#[derive(Debug, Default)]
pub(crate) struct Resume {
    /// The first revision asked for.
    from: Option<u64>,
    /// The newest revision printed (0: none yet).
    last: u64,
    /// Events of `last` printed.
    at_last: usize,
    /// Events of `last` still to skip on the current stream (it replays them).
    skip: usize,
}

impl Resume {
    pub(crate) fn new(from: Option<u64>) -> Resume {
        Resume {
            from: from.filter(|&r| r > 0),
            ..Resume::default()
        }
    }

    /// The revision a (new) stream should start at; `None` until one is known.
    pub(crate) fn start(&self) -> Option<u64> {
        if self.last > 0 {
            Some(self.last)
        } else {
            self.from
        }
    }

    /// Sets the first revision, if none was given.
    pub(crate) fn begin_at(&mut self, revision: u64) {
        self.from.get_or_insert(revision);
    }

    /// The server no longer holds revision `oldest - 1`. If that is the last revision
    /// printed, its events were all printed (a stream breaks between revisions, not inside
    /// one, unless it is cut off mid-batch) and the watch can go on from `oldest`: true.
    pub(crate) fn gone(&mut self, oldest: u64) -> bool {
        if self.last == 0 || oldest != self.last + 1 {
            return false;
        }
        *self = Resume::new(Some(oldest));
        true
    }

    /// A new stream starts at [`Resume::start`]: it replays the events of `last` printed.
    pub(crate) fn new_stream(&mut self) {
        self.skip = self.at_last;
    }

    /// True if the event at `revision` is new and should be printed.
    pub(crate) fn accept(&mut self, revision: u64) -> bool {
        if self.from.is_some_and(|f| revision < f) || revision < self.last {
            return false;
        }
        if self.last > 0 && revision == self.last {
            if self.skip > 0 {
                self.skip -= 1;
                return false;
            }
            self.at_last += 1;
            return true;
        }
        self.last = revision;
        self.at_last = 1;
        self.skip = 0;
        true
    }
}

/// How one stream ended.
enum End {
    /// The server closed it (it is shutting down).
    Closed,
    Lost(ClientError),
    /// The server cut this watcher off (it fell behind).
    CutOff(String),
}

pub(super) async fn run(
    eps: &mut Endpoints,
    out: &Out,
    key: &str,
    prefix: bool,
    from: Option<u64>,
) -> Result<(), Failed> {
    let mut resume = Resume::new(from);
    let give_up_after = eps_timeout(eps) * 3;
    let mut streamed_once = false;
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    if eps.is_empty() {
        return Err(Failed::new(Exit::Usage, "no endpoints to watch"));
    }
    loop {
        let mut tried = Vec::new();
        let mut streamed = false;
        for i in eps.order() {
            let conn = eps.conn(i);
            let endpoint = conn.addr().to_string();
            let (stream, start) = match open(conn, key, prefix, &mut resume).await {
                Opened::Stream(stream, start) => (stream, start),
                Opened::Skip(reason) => {
                    tried.push((endpoint, reason));
                    continue;
                }
                Opened::Gone(oldest) => {
                    // Only the revision already printed is gone: go on after it.
                    eprintln!(
                        "coordinatectl: {endpoint} no longer holds revision {}; resuming from {oldest}",
                        oldest - 1
                    );
                    streamed = true;
                    break;
                }
                Opened::Refused(reply) => {
                    return Err(super::refused(&format!("watch {key:?}"), &endpoint, &reply));
                }
            };
            eps.prefer(i);
            streamed_once = true;
            failing_since = None;
            backoff = Duration::from_millis(100);
            resume.new_stream();
            let why = match follow(stream.events(), out, &mut resume).await {
                End::Closed => "the server closed the stream".to_string(),
                End::Lost(f) => f.reason(),
                End::CutOff(reason) => format!("the server cut the watch off: {reason}"),
            };
            eprintln!(
                "coordinatectl: watch on {endpoint} ended ({why}); resuming from revision {}",
                resume.start().unwrap_or(start)
            );
            // Reconnect at once, starting with the same endpoint.
            streamed = true;
            break;
        }
        if streamed {
            continue;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if !streamed_once || since.elapsed() >= give_up_after {
            return Err(give_up(&tried, &resume));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// What one endpoint made of a watch request.
enum Opened {
    /// The stream, and the revision it starts at.
    Stream(Stream, u64),
    /// Try the next endpoint, for this reason.
    Skip(String),
    /// `410`, but only revisions already printed are gone: resume from this one.
    Gone(u64),
    /// The cluster's answer: stop.
    Refused(Response),
}

/// Opens the watch on `conn`, first asking it where "now" is if no start is known yet (so
/// that a break before the first event loses nothing).
async fn open(conn: &mut Connection, key: &str, prefix: bool, resume: &mut Resume) -> Opened {
    if resume.start().is_none() {
        match conn.send(&Request::status()).await {
            Ok(r) if r.status == StatusCode::OK => {
                let status: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                match status["revision"].as_u64() {
                    Some(rev) => resume.begin_at(rev + 1),
                    None => return Opened::Skip("/v1/status has no revision".into()),
                }
            }
            Ok(r) => return Opened::Skip(format!("{} ({})", r.reason(), r.status.as_u16())),
            Err(f) => return Opened::Skip(f.reason()),
        }
    }
    let start = resume.start().unwrap_or(0);
    let mut stream = match conn.open(&Request::watch(key, prefix, start)).await {
        Ok(stream) => stream,
        Err(f) => return Opened::Skip(f.reason()),
    };
    let status = stream.status;
    if status == StatusCode::OK {
        return Opened::Stream(stream, start);
    }
    let text = stream
        .read_rest(ERROR_BODY_LIMIT, Duration::from_secs(5))
        .await;
    let reply = Response::new(status, text);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Opened::Skip(format!("{} (503)", reply.reason()));
    }
    if status == StatusCode::GONE {
        let oldest = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["oldest_revision"].as_u64());
        if let Some(o) = oldest.filter(|&o| resume.gone(o)) {
            return Opened::Gone(o);
        }
    }
    Opened::Refused(reply)
}

/// No endpoint accepted the watch for long enough: say why, and where to resume.
fn give_up(tried: &[(String, String)], resume: &Resume) -> Failed {
    let mut msg = String::from("cannot watch: no endpoint accepted the watch:");
    for (endpoint, reason) in tried {
        msg.push_str(&format!("\n  {endpoint}: {reason}"));
    }
    if let Some(start) = resume.start() {
        msg.push_str(&format!("\nresume with --from-revision {start}"));
    }
    Failed::new(Exit::Unavailable, msg)
}

fn eps_timeout(eps: &Endpoints) -> Duration {
    eps.timeout().unwrap_or(Duration::from_secs(10))
}

/// Prints the events of one stream until it ends.
async fn follow(mut events: Events, out: &Out, resume: &mut Resume) -> End {
    loop {
        let event = match events.next().await {
            Ok(Some(event)) => event,
            Ok(None) => return End::Closed,
            Err(f) => return End::Lost(f),
        };
        let data: Value = match serde_json::from_str(&event.data) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "coordinatectl: ignoring an event that is not JSON ({e}): {}",
                    event.data
                );
                continue;
            }
        };
        match event.event.as_str() {
            "put" | "delete" => {
                let Some(revision) = data["revision"].as_u64() else {
                    continue;
                };
                if !resume.accept(revision) {
                    continue;
                }
                if out.json {
                    out.text(&format!("{}\n", event.data));
                } else {
                    out.text(&format!("{}\n", output::event_line(&data)));
                }
            }
            "error" => {
                let reason = data["error"].as_str().unwrap_or("error event").to_string();
                return End::CutOff(reason);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_stream_replays_nothing_already_printed() {
        let mut r = Resume::new(Some(5));
        assert_eq!(r.start(), Some(5));
        // The server may send older live events; they are not what was asked for.
        assert!(!r.accept(4));
        assert!(r.accept(5));
        // A transaction: two events at revision 7.
        assert!(r.accept(7));
        assert!(r.accept(7));
        // The stream breaks; the next one starts at 7 and replays both.
        assert_eq!(r.start(), Some(7));
        r.new_stream();
        assert!(!r.accept(7));
        assert!(!r.accept(7));
        assert!(r.accept(8));
        assert!(!r.accept(6));
        // A break right after 8: its one event is skipped, later ones at 8 are new.
        r.new_stream();
        assert!(!r.accept(8));
        assert!(r.accept(8));
        assert!(r.accept(9));
    }

    #[test]
    fn the_start_is_known_before_the_first_event() {
        let mut r = Resume::new(None);
        assert_eq!(r.start(), None);
        r.begin_at(12);
        assert_eq!(r.start(), Some(12));
        // An explicit start is kept.
        let mut r = Resume::new(Some(3));
        r.begin_at(12);
        assert_eq!(r.start(), Some(3));
        // Revision 0 means "from now", like the server's.
        assert_eq!(Resume::new(Some(0)).start(), None);
    }

    #[test]
    fn a_restarted_window_can_start_right_after_the_last_event() {
        let mut r = Resume::new(None);
        r.begin_at(5);
        // Nothing printed yet: a start before the window is a real loss.
        assert!(!r.gone(6));
        assert!(r.accept(7));
        // Revisions after the last one printed are gone: a real loss.
        assert!(!r.gone(9));
        // Only the last printed one is gone: go on from the next.
        assert!(r.gone(8));
        assert_eq!(r.start(), Some(8));
        assert!(!r.accept(7));
        assert!(r.accept(8));
    }
}
