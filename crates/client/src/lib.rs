//! `coordinate_client`: the one client of coordinate's HTTP API, used by `coordinatectl`,
//! `coordinate-bench`, `chaos` and the end-to-end tests.
//!
//! ## Layers, bottom up
//! - [`Connection`] (`conn`): one keep-alive HTTP/1.1 connection to one node, requests in
//!   sequence, one deadline per request. Raw: any method, path, headers and body, so the
//!   load generator can also drive etcd's gateway. Its errors ([`ClientError`]) say whether
//!   the request may have reached the server.
//! - [`api`]: the `/v1` requests, built in one place (paths, encoding, conditions, bodies),
//!   each marked idempotent or not.
//! - [`Endpoints`] (`failover`): a list of nodes tried in order; the rules for what may be
//!   retried on the next one live in [`failover::step`]. Its error is [`CallError`].
//! - [`Client`]: typed calls (get, put, cas, delete, list, txn, members, status; in `lease`:
//!   leases, range reads, reads at a revision, leased puts, compaction, alarms) that check
//!   the status the API promises and decode the answer; refusals are [`Error::Refused`].
//!   [`Client::watch`] opens a typed [`Watch`].
//! - [`sse`]: Server-Sent Events for watches ([`Stream::events`]).
//! - [`blocking`]: the same connection for synchronous callers (tests, scripts).
//!
//! ## What makes a retry safe
//! A request that was never sent (no connection, a stale idle connection, an invalid
//! request) can be sent anywhere. One that was sent and got no answer (connection lost,
//! timeout) may have been applied: a read can be repeated, a write cannot — the caller
//! must read back first or use a conditional write. A `503` says "not applied", a `504`
//! "outcome unknown" (docs/API.md, status codes).
//!
//! ## Deliberately missing
//! HTTPS (the server speaks plain HTTP), HTTP/2, connection pools (callers open the
//! connections they want), automatic retries of writes, and redirects (any node serves any
//! request).

pub mod api;
pub mod blocking;
mod client;
mod conn;
mod endpoint;
mod error;
pub mod failover;
mod lease;
pub mod sse;
mod tls;
mod watch;

pub use api::{
    kv_path, query_value, Condition, Consistency, ListOptions, RangeEnd, RangeOptions, SortOrder,
    SortTarget, MAX_PAGE,
};
pub use client::{
    Client, CompareOp, DeleteResponse, GetResponse, KeyValue, ListPage, Member, Status, Target,
    Txn, TxnOp, TxnResponse,
};
pub use conn::{key_path, Connection, Request, Response, Stream, ERROR_BODY_LIMIT};
pub use coordinate_tls::client::ClientSpec as TlsSpec;
pub use endpoint::{is_https, parse_endpoint, EndpointError};
pub use error::{CallError, ClientError, Error};
pub use failover::Endpoints;
pub use lease::{Alarm, AlarmList, LeaseGrant, LeaseList, RangeResponse, TimeToLive};
pub use tls::ClientTls;
pub use watch::{EventKind, Watch, WatchError, WatchEvent};
