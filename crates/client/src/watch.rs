//! Typed watches: [`Client::watch`] opens `/v1/watch/<key>` on the first endpoint that
//! accepts it, and [`Watch::next`] yields its changes as [`WatchEvent`]s.
//!
//! One `Watch` is one stream from one node; it does not reconnect. A caller that must not
//! lose events resumes with `from_revision` = the last revision it processed, skipping the
//! events of that revision it already has (a revision can hold several: a transaction, a
//! prefix delete) — `coordinatectl watch` does exactly that. A watcher that falls behind is
//! cut off by the server with an `error` event naming where to resume
//! ([`WatchError::CutOff`]).

use base64::Engine as _;
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;

use crate::client::Client;
use crate::conn::{Request, Response, ERROR_BODY_LIMIT};
use crate::error::{CallError, ClientError, Error};
use crate::sse::Events;

/// A change to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    /// The new value (`None` on deletes).
    pub value: Option<Bytes>,
    pub revision: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// How a watch stream ended, other than by the server closing it.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{}", .0.reason())]
    Lost(ClientError),
    /// The server cut this watcher off (it fell behind); resume from this revision.
    #[error("the server cut the watch off: {reason}")]
    CutOff {
        reason: String,
        resume_from_revision: Option<u64>,
    },
    /// An event that is not what the API promises.
    #[error("invalid watch event: {0}")]
    Invalid(String),
}

/// An open watch on one endpoint.
pub struct Watch {
    /// The endpoint serving it.
    pub endpoint: String,
    events: Events,
}

impl Watch {
    /// The next change; `Ok(None)` when the server closed the stream (it is shutting down).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, WatchError> {
        #[derive(Deserialize)]
        struct Data {
            key: String,
            #[serde(default)]
            value: Option<String>,
            #[serde(default)]
            encoding: Option<String>,
            revision: u64,
        }
        loop {
            let Some(event) = self.events.next().await.map_err(WatchError::Lost)? else {
                return Ok(None);
            };
            let kind = match event.event.as_str() {
                "put" => EventKind::Put,
                "delete" => EventKind::Delete,
                "error" => return Err(cut_off(&event.data)),
                _ => continue,
            };
            let data: Data = serde_json::from_str(&event.data)
                .map_err(|e| WatchError::Invalid(format!("{e}: {}", event.data)))?;
            let value = match (data.value, data.encoding.as_deref()) {
                (Some(v), Some("base64")) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(&v)
                        .map(Bytes::from)
                        .map_err(|e| WatchError::Invalid(format!("bad base64: {e}")))?,
                ),
                (v, _) => v.map(Bytes::from),
            };
            return Ok(Some(WatchEvent {
                kind,
                key: data.key,
                value,
                revision: data.revision,
            }));
        }
    }
}

fn cut_off(data: &str) -> WatchError {
    let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
    WatchError::CutOff {
        reason: v["error"].as_str().unwrap_or("error event").to_string(),
        resume_from_revision: v["resume_from_revision"].as_u64(),
    }
}

impl Client {
    /// Watches `key` (every key under it if `prefix`) from `from_revision` (0: from now), on
    /// the first endpoint that accepts. A start before the server's window is
    /// [`Error::Refused`] with status 410 and `oldest_revision` in its body.
    pub async fn watch(
        &mut self,
        key: &str,
        prefix: bool,
        from_revision: u64,
    ) -> Result<Watch, Error> {
        let req = Request::watch(key, prefix, from_revision);
        let what = format!("watch {key:?}");
        let endpoints = self.endpoints();
        let mut tried = Vec::new();
        for i in endpoints.order() {
            let conn = endpoints.conn(i);
            let endpoint = conn.addr().to_string();
            let timeout = conn.timeout();
            let mut stream = match conn.open(&req).await {
                Ok(stream) => stream,
                Err(e) => {
                    tried.push((endpoint, e.reason()));
                    continue;
                }
            };
            if stream.status == StatusCode::OK {
                endpoints.prefer(i);
                return Ok(Watch {
                    endpoint,
                    events: stream.events(),
                });
            }
            let body = stream.read_rest(ERROR_BODY_LIMIT, timeout).await;
            let answer = Response::new(stream.status, body);
            if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                tried.push((endpoint, format!("{} (503)", answer.reason())));
                continue;
            }
            return Err(Error::Refused {
                what,
                endpoint,
                status: answer.status,
                reason: answer.reason(),
                body: answer.body,
            });
        }
        Err(Error::Call(CallError::Unavailable(tried)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_says_where_to_resume() {
        match cut_off(r#"{"error":"fell behind","resume_from_revision":51234}"#) {
            WatchError::CutOff {
                reason,
                resume_from_revision,
            } => {
                assert_eq!(reason, "fell behind");
                assert_eq!(resume_from_revision, Some(51234));
            }
            other => panic!("{other:?}"),
        }
    }
}
