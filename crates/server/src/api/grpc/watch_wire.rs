//! The Watch service's wire: etcd's `etcdserverpb.Watch/Watch`, served by this module rather
//! than by the generated server, so that its answers are [`Answer`]s — a response without
//! its events, and the events already encoded, each once for every watcher that sends it
//! (`crate::watch::Published`). Encoding an answer copies those bytes into the frame; the
//! generated server would re-encode every event for every watcher.
//!
//! On the wire an answer is exactly etcd's `WatchResponse`: its fields, then each event as
//! field 11 (`repeated mvccpb.Event events = 11`). The watchers' logic is `watch`'s.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::mvccpb;
use futures_util::future::BoxFuture;
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::body::Body;
use tonic::server::{NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::watch::Answers;
use super::Grpc;

/// The field number of `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// One watch response: `head` (every field but the events, which it leaves empty), and the
/// events, each an encoded `mvccpb.Event`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub head: pb::WatchResponse,
    pub events: Vec<Bytes>,
}

impl Answer {
    /// An answer without events (created, canceled, progress).
    pub fn of(head: pb::WatchResponse) -> Answer {
        Answer {
            head,
            events: Vec::new(),
        }
    }
}

/// The encoding of an event as a `WatchResponse` carries it.
pub fn encode_event(event: &mvccpb::Event) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

impl Message for Answer {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        for event in &self.events {
            encoding::encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
            encoding::encode_varint(event.len() as u64, buf);
            buf.put_slice(event);
        }
    }

    /// Decoding (what a client does; the server only encodes) keeps each event's bytes as
    /// `encode_event` makes them.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENTS_FIELD {
            return self.head.merge_field(tag, wire_type, buf, ctx);
        }
        let mut event = mvccpb::Event::default();
        encoding::message::merge(wire_type, &mut event, buf, ctx)?;
        self.events.push(encode_event(&event));
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        let key = encoding::key_len(EVENTS_FIELD);
        let events: usize = self
            .events
            .iter()
            .map(|e| key + encoding::encoded_len_varint(e.len() as u64) + e.len())
            .sum();
        self.head.encoded_len() + events
    }

    fn clear(&mut self) {
        self.head.clear();
        self.events.clear();
    }
}

/// The Watch service, as tonic's router takes a service.
#[derive(Clone)]
pub struct WatchServer {
    grpc: Arc<Grpc>,
}

impl WatchServer {
    pub fn new(grpc: Grpc) -> WatchServer {
        WatchServer {
            grpc: Arc::new(grpc),
        }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl tower::Service<http::Request<Body>> for WatchServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let grpc = self.grpc.clone();
        Box::pin(async move {
            if req.uri().path() != "/etcdserverpb.Watch/Watch" {
                return Ok(
                    Status::unimplemented("unknown method of etcdserverpb.Watch").into_http(),
                );
            }
            let codec = ProstCodec::<Answer, pb::WatchRequest>::default();
            Ok(tonic::server::Grpc::new(codec)
                .streaming(Method(grpc), req)
                .await)
        })
    }
}

/// The one method, `Watch`.
struct Method(Arc<Grpc>);

impl StreamingService<pb::WatchRequest> for Method {
    type Response = Answer;
    type ResponseStream = Answers;
    type Future = BoxFuture<'static, Result<Response<Answers>, Status>>;

    fn call(&mut self, request: Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        let grpc = self.0.clone();
        Box::pin(async move { grpc.watch(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value: &str) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                mod_revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    /// An answer's bytes are the `WatchResponse` prost would write with those events, and
    /// decode back to the same answer.
    #[test]
    fn an_answer_is_a_watch_response_on_the_wire() {
        let events = vec![event("a", "1"), event("b", &"x".repeat(300))];
        let head = pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            watch_id: 3,
            fragment: true,
            ..Default::default()
        };
        let response = pb::WatchResponse {
            events: events.clone(),
            ..head.clone()
        };
        let answer = Answer {
            head,
            events: events.iter().map(encode_event).collect(),
        };
        let bytes = answer.encode_to_vec();
        assert_eq!(bytes, response.encode_to_vec());
        assert_eq!(answer.encoded_len(), bytes.len());
        assert_eq!(pb::WatchResponse::decode(&bytes[..]).unwrap(), response);
        assert_eq!(Answer::decode(&bytes[..]).unwrap(), answer);
        assert_eq!(Answer::of(pb::WatchResponse::default()).encoded_len(), 0);
    }
}
