//! The gRPC connection of the `grpc` target: etcd's v3 KV service (Put, Range), the same
//! client against coordinate and against etcd. Each worker has one request in flight; workers
//! share `--grpc-conns` HTTP/2 connections (requests multiplexed on each, as an etcd client
//! process does), one per worker by default, as each HTTP worker has its own keep-alive
//! connection.
//!
//! Two clients speak it (`--grpc-client`):
//! - `h2` (the default): calls framed by hand (gRPC's 5-byte prefix, prost messages) on the
//!   `h2` crate's connection, which the workers' tasks drive directly. It costs the client
//!   about half the CPU per call of tonic's (whose channel hands every call through a tower
//!   buffer task to hyper's dispatch task), CPU which the servers on the same cores share.
//! - `tonic`: etcd's generated tonic client, as an application using tonic would call.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::ValueEnum;
use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::kv_client::KvClient;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::workload::{OpKind, Outcome, Request};
use crate::ReadMode;

/// Which gRPC client the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Client {
    /// Calls framed by hand on the `h2` crate's HTTP/2 connection: the lightest client.
    H2,
    /// etcd's generated tonic client over a tonic channel.
    Tonic,
}

/// An HTTP/2 connection the workers share, connected on first use.
#[derive(Clone)]
pub enum Shared {
    H2(Arc<H2Conn>),
    Tonic(Channel),
}

/// One worker's client over a [`Shared`] connection.
pub struct GrpcConnection {
    wire: Wire,
    serializable: bool,
    timeout: Duration,
}

enum Wire {
    H2 {
        conn: Arc<H2Conn>,
        /// This worker's handle on the connection (a clone of the shared one).
        send: Option<h2::client::SendRequest<Bytes>>,
    },
    Tonic(KvClient<Channel>),
}

/// A connection to `addr` (host:port) for `client`, connected on first use; every call times
/// out after `timeout`.
pub fn connection(client: Client, addr: &str, timeout: Duration) -> Result<Shared, String> {
    match client {
        Client::H2 => Ok(Shared::H2(Arc::new(H2Conn::new(addr)?))),
        Client::Tonic => {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| format!("endpoint {addr:?}: {e}"))?
                .timeout(timeout)
                .connect_timeout(timeout)
                .tcp_nodelay(true);
            Ok(Shared::Tonic(endpoint.connect_lazy()))
        }
    }
}

impl GrpcConnection {
    /// A worker's client over `shared` (shared with other workers, or its own).
    pub fn new(shared: Shared, mode: ReadMode, timeout: Duration) -> GrpcConnection {
        let wire = match shared {
            Shared::H2(conn) => Wire::H2 { conn, send: None },
            Shared::Tonic(channel) => Wire::Tonic(KvClient::new(channel)),
        };
        GrpcConnection {
            wire,
            serializable: mode == ReadMode::Serializable,
            timeout,
        }
    }

    /// Sends `req` (a put of `body` to the key `path`, or a range read of it) and says how it
    /// went: a gRPC error is counted by its code (`grpc Unavailable`).
    pub async fn execute(&mut self, req: &Request<'_>) -> Outcome {
        let key = req.path.as_bytes().to_vec();
        let result = match &mut self.wire {
            Wire::H2 { conn, send } => {
                let call = h2_call(conn, send, req.kind, key, &req.body, self.serializable);
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(result) => result,
                    Err(_) => Err(tonic::Code::DeadlineExceeded),
                }
            }
            Wire::Tonic(kv) => tonic_call(kv, req.kind, key, &req.body, self.serializable)
                .await
                .map_err(|status| status.code()),
        };
        result.unwrap_or_else(|code| Outcome::Error(format!("grpc {code:?}")))
    }
}

async fn tonic_call(
    kv: &mut KvClient<Channel>,
    kind: OpKind,
    key: Vec<u8>,
    body: &Bytes,
    serializable: bool,
) -> Result<Outcome, tonic::Status> {
    match kind {
        OpKind::Put => kv.put(put_request(key, body)).await.map(|_| Outcome::Ok),
        OpKind::Get => kv
            .range(range_request(key, serializable))
            .await
            .map(|r| read_outcome(&r.into_inner())),
    }
}

fn put_request(key: Vec<u8>, body: &Bytes) -> pb::PutRequest {
    pb::PutRequest {
        key,
        value: body.to_vec(),
        ..Default::default()
    }
}

fn range_request(key: Vec<u8>, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key,
        serializable,
        ..Default::default()
    }
}

fn read_outcome(r: &pb::RangeResponse) -> Outcome {
    match r.kvs.is_empty() {
        true => Outcome::NotFound,
        false => Outcome::Ok,
    }
}

/// One call on the `h2` client: the request framed, sent, and its answer read and decoded.
async fn h2_call(
    conn: &H2Conn,
    send: &mut Option<h2::client::SendRequest<Bytes>>,
    kind: OpKind,
    key: Vec<u8>,
    body: &Bytes,
    serializable: bool,
) -> Result<Outcome, tonic::Code> {
    let (path, message) = match kind {
        OpKind::Put => (&conn.put, frame(&put_request(key, body))),
        OpKind::Get => (&conn.range, frame(&range_request(key, serializable))),
    };
    let answer = match conn.call(send, path, message).await {
        Ok(answer) => answer,
        Err(code) => {
            // The connection may be gone: take the shared one again next time.
            *send = None;
            return Err(code);
        }
    };
    match kind {
        OpKind::Put => pb::PutResponse::decode(answer)
            .map(|_| Outcome::Ok)
            .map_err(|_| tonic::Code::Internal),
        OpKind::Get => pb::RangeResponse::decode(answer)
            .map(|r| read_outcome(&r))
            .map_err(|_| tonic::Code::Internal),
    }
}

/// A message as gRPC frames it: not compressed, its length (big-endian), the message.
fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Cannot fail: the buffer has room for the whole message.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// An HTTP/2 connection of the `h2` client: the address, the calls' URIs, and the shared
/// handle, made on first use and again after the connection failed.
pub struct H2Conn {
    addr: String,
    put: http::Uri,
    range: http::Uri,
    shared: tokio::sync::Mutex<Option<h2::client::SendRequest<Bytes>>>,
}

impl H2Conn {
    fn new(addr: &str) -> Result<H2Conn, String> {
        let uri = |method: &str| {
            format!("http://{addr}/etcdserverpb.KV/{method}")
                .parse::<http::Uri>()
                .map_err(|e| format!("endpoint {addr:?}: {e}"))
        };
        Ok(H2Conn {
            addr: addr.to_string(),
            put: uri("Put")?,
            range: uri("Range")?,
            shared: tokio::sync::Mutex::new(None),
        })
    }

    /// This worker's handle, ready to open a stream: its own, else a clone of the shared
    /// one, else a new connection's (which becomes the shared one).
    async fn ready<'a>(
        &self,
        send: &'a mut Option<h2::client::SendRequest<Bytes>>,
    ) -> Result<&'a mut h2::client::SendRequest<Bytes>, tonic::Code> {
        let alive = match send.as_mut() {
            Some(s) => poll_ready(s).await,
            None => false,
        };
        if !alive {
            *send = Some(self.shared().await?);
        }
        send.as_mut().ok_or(tonic::Code::Unavailable)
    }

    /// A ready clone of the shared handle, connecting again if its connection is gone.
    async fn shared(&self) -> Result<h2::client::SendRequest<Bytes>, tonic::Code> {
        let mut shared = self.shared.lock().await;
        if let Some(mut s) = shared.clone() {
            if poll_ready(&mut s).await {
                return Ok(s);
            }
        }
        let mut s = self.connect().await?;
        if !poll_ready(&mut s).await {
            return Err(tonic::Code::Unavailable);
        }
        *shared = Some(s.clone());
        Ok(s)
    }

    async fn connect(&self) -> Result<h2::client::SendRequest<Bytes>, tonic::Code> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        // Latency, not bandwidth: one small call at a time per stream.
        let _ = tcp.set_nodelay(true);
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(send)
    }

    /// Sends `message` (framed) to `path` and returns the answer's message bytes, or the
    /// call's gRPC status code when it failed.
    async fn call(
        &self,
        send: &mut Option<h2::client::SendRequest<Bytes>>,
        path: &http::Uri,
        message: Bytes,
    ) -> Result<Bytes, tonic::Code> {
        let client = self.ready(send).await?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(path.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(())
            .map_err(|_| tonic::Code::Internal)?;
        let (answer, mut stream) = client
            .send_request(request, false)
            .map_err(|_| tonic::Code::Unavailable)?;
        stream
            .send_data(message, true)
            .map_err(|_| tonic::Code::Unavailable)?;
        let answer = answer.await.map_err(|_| tonic::Code::Unavailable)?;
        // A call refused at once answers its status in the headers (trailers-only).
        status(answer.headers())?;
        let mut body = answer.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|_| tonic::Code::Unavailable)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        match body.trailers().await {
            Ok(Some(trailers)) => status(&trailers)?,
            _ => return Err(tonic::Code::Internal),
        }
        unframe(data.freeze())
    }
}

/// Waits until `send` may open a stream; false when its connection is gone.
async fn poll_ready(send: &mut h2::client::SendRequest<Bytes>) -> bool {
    std::future::poll_fn(|cx| send.poll_ready(cx)).await.is_ok()
}

/// The gRPC status in `headers`: `Ok` when absent or 0.
fn status(headers: &http::HeaderMap) -> Result<(), tonic::Code> {
    match headers.get("grpc-status").map(|v| v.as_bytes()) {
        None | Some(b"0") => Ok(()),
        Some(code) => Err(tonic::Code::from_bytes(code)),
    }
}

/// The message of one gRPC frame (uncompressed, as requested).
fn unframe(mut data: Bytes) -> Result<Bytes, tonic::Code> {
    if data.len() < 5 || data[0] != 0 {
        return Err(tonic::Code::Internal);
    }
    data.advance(1);
    let len = data.get_u32() as usize;
    if data.len() != len {
        return Err(tonic::Code::Internal);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_message_unframes_to_itself() {
        let put = put_request(b"k".to_vec(), &Bytes::from_static(b"value"));
        let framed = frame(&put);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - 5
        );
        let message = unframe(framed).unwrap();
        assert_eq!(pb::PutRequest::decode(message).unwrap(), put);
    }

    #[test]
    fn a_damaged_frame_is_an_error() {
        let framed = frame(&range_request(b"k".to_vec(), false));
        assert!(unframe(framed.slice(..framed.len() - 1)).is_err());
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert!(unframe(Bytes::from(compressed)).is_err());
        assert!(unframe(Bytes::from_static(b"\0\0")).is_err());
    }

    #[test]
    fn a_status_in_the_headers_is_the_calls() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status(&headers), Ok(()));
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(status(&headers), Ok(()));
        headers.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(status(&headers), Err(tonic::Code::Unavailable));
    }
}
