//! Endpoint failover: which answers end a request, and which let the next endpoint try.
//!
//! The endpoints are tried in order, starting from the one that answered last (so `ls`
//! pages stay on one node). The rules, in [`step`]:
//!
//! - **Could not connect**: nothing was sent; try the next endpoint.
//! - **503**: the node could not serve it (no leader, no quorum for a read) and says the
//!   write was not applied; try the next endpoint. A 503 whose reason still says "outcome
//!   unknown" is taken at its word for a write: stop.
//! - **421**: this node cannot answer that (promotion asked of a follower); nothing was
//!   applied, so another endpoint may (the leader can).
//! - **Connection lost or no answer after sending**: a read is retried elsewhere; a write's
//!   outcome is unknown, so it is not repeated.
//! - **504**: the write was handed to Raft and not confirmed: outcome unknown; stop.
//! - Anything else (2xx, 4xx, other 5xx) is the answer.

use std::time::Duration;

use hyper::StatusCode;

use crate::conn::{Connection, Request, Response};
use crate::error::{CallError, ClientError};
use crate::tls::ClientTls;

/// What to do after one endpoint's attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// This is the answer.
    Answer,
    /// Try the next endpoint; the reason is kept for the final report.
    Next(String),
    /// Stop: the write may or may not have been applied.
    Unknown(String),
}

/// Decides what one attempt means (see the module docs).
pub fn step(idempotent: bool, attempt: &Result<Response, ClientError>) -> Step {
    match attempt {
        Err(f) if f.safe_to_retry(idempotent) => Step::Next(f.reason()),
        Err(f) => Step::Unknown(format!(
            "{}; the request was sent, so its outcome is unknown: it may still be applied",
            f.reason()
        )),
        Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE => {
            let reason = r.reason();
            if !idempotent && reason.contains("outcome unknown") {
                Step::Unknown(format!("{reason} (503)"))
            } else {
                Step::Next(format!("{reason} (503)"))
            }
        }
        Ok(r) if r.status == StatusCode::MISDIRECTED_REQUEST => {
            Step::Next(format!("{} (421)", r.reason()))
        }
        Ok(r) if r.status == StatusCode::GATEWAY_TIMEOUT => {
            let reason = r.reason();
            if reason.contains("outcome unknown") {
                Step::Unknown(format!("{reason} (504)"))
            } else {
                Step::Unknown(format!("{reason} (504): outcome unknown"))
            }
        }
        Ok(_) => Step::Answer,
    }
}

/// The endpoints, in order, with the one to start from.
pub struct Endpoints {
    conns: Vec<Connection>,
    /// Index of the endpoint that answered last.
    current: usize,
}

impl Endpoints {
    /// One lazily opened connection per `host:port` (see [`crate::parse_endpoint`]).
    pub fn new(addrs: &[String], timeout: Duration) -> Endpoints {
        Endpoints::with_tls(addrs, timeout, None)
    }

    /// The same, every connection speaking TLS with `tls` if given.
    pub fn with_tls(addrs: &[String], timeout: Duration, tls: Option<ClientTls>) -> Endpoints {
        Endpoints {
            conns: addrs
                .iter()
                .map(|a| Connection::new(a.clone(), timeout).with_tls(tls.clone()))
                .collect(),
            current: 0,
        }
    }

    /// The per-request deadline of each endpoint.
    pub fn timeout(&self) -> Option<Duration> {
        self.conns.first().map(Connection::timeout)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The endpoint at `i`.
    pub fn conn(&mut self, i: usize) -> &mut Connection {
        &mut self.conns[i]
    }

    /// Indices in the order to try them: the last one that answered first.
    pub fn order(&self) -> Vec<usize> {
        let n = self.conns.len();
        (0..n).map(|k| (self.current + k) % n).collect()
    }

    /// Marks endpoint `i` as the one to start from next time.
    pub fn prefer(&mut self, i: usize) {
        self.current = i;
    }

    /// Sends `req` to each endpoint in turn until one answers (see [`step`]). Returns the
    /// endpoint's address and its answer.
    pub async fn call(&mut self, req: &Request) -> Result<(String, Response), CallError> {
        let mut tried = Vec::new();
        for i in self.order() {
            let conn = &mut self.conns[i];
            let attempt = conn.send(req).await;
            let endpoint = conn.addr().to_string();
            match (step(req.idempotent, &attempt), attempt) {
                (Step::Answer, Ok(reply)) => {
                    self.current = i;
                    return Ok((endpoint, reply));
                }
                // `step` answers only replies; a failure here is one more reason.
                (Step::Answer, Err(f)) => tried.push((endpoint, f.reason())),
                (Step::Next(reason), _) => tried.push((endpoint, reason)),
                (Step::Unknown(reason), _) => return Err(CallError::Unknown { endpoint, reason }),
            }
        }
        Err(CallError::Unavailable(tried))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(status: u16, body: &str) -> Result<Response, ClientError> {
        Ok(Response::new(
            StatusCode::from_u16(status).unwrap(),
            Bytes::from(body.to_string()),
        ))
    }

    #[test]
    fn connection_refused_tries_the_next_endpoint() {
        let refused = Err(ClientError::Connect {
            addr: "a:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert!(matches!(step(false, &refused), Step::Next(_)));
        assert!(matches!(step(true, &refused), Step::Next(_)));
    }

    #[test]
    fn a_lost_answer_is_retried_only_for_reads() {
        for timeout in [Duration::from_secs(1), Duration::from_millis(5)] {
            let attempt = Err(ClientError::Timeout(timeout));
            assert!(matches!(step(true, &attempt), Step::Next(_)));
            match step(false, &attempt) {
                Step::Unknown(reason) => assert!(reason.contains("outcome is unknown")),
                other => panic!("a write lost in flight must stop, got {other:?}"),
            }
        }
    }

    #[test]
    fn unavailable_tries_the_next_endpoint() {
        let no_leader = reply(
            503,
            r#"{"error":"no leader is known; the request was not applied"}"#,
        );
        assert!(matches!(step(false, &no_leader), Step::Next(_)));
        assert!(matches!(step(true, &no_leader), Step::Next(_)));
        // A 503 that says it may still apply is not repeated for a write.
        let shutting = reply(
            503,
            r#"{"error":"the node is shutting down; outcome unknown"}"#,
        );
        assert!(matches!(step(false, &shutting), Step::Unknown(_)));
        assert!(matches!(step(true, &shutting), Step::Next(_)));
        // A promotion asked of a follower: the leader may take it.
        assert!(matches!(
            step(false, &reply(421, r#"{"error":"ask the leader"}"#)),
            Step::Next(_)
        ));
    }

    #[test]
    fn gateway_timeout_is_outcome_unknown() {
        let timeout = reply(
            504,
            r#"{"error":"timed out waiting for a quorum; outcome unknown: the write may still be applied"}"#,
        );
        match step(false, &timeout) {
            Step::Unknown(reason) => assert!(reason.contains("outcome unknown")),
            other => panic!("504 must stop, got {other:?}"),
        }
        // Even a bare 504 says so.
        match step(true, &reply(504, "")) {
            Step::Unknown(reason) => assert!(reason.contains("outcome unknown")),
            other => panic!("504 must stop, got {other:?}"),
        }
    }

    #[test]
    fn refusals_and_successes_are_answers() {
        for status in [200, 201, 204, 400, 404, 409, 410, 412, 413, 500] {
            assert_eq!(step(false, &reply(status, "")), Step::Answer, "{status}");
        }
    }

    #[tokio::test]
    async fn every_endpoint_is_tried_and_reported() {
        // Two ports nobody listens on: bind and release them.
        let dead: Vec<String> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            })
            .collect();
        let mut endpoints = Endpoints::new(&dead, Duration::from_secs(2));
        match endpoints.call(&Request::get("/health")).await {
            Err(CallError::Unavailable(tried)) => {
                let names: Vec<&str> = tried.iter().map(|(e, _)| e.as_str()).collect();
                assert_eq!(names, vec![dead[0].as_str(), dead[1].as_str()]);
                assert!(tried[0].1.contains("cannot connect"), "{tried:?}");
            }
            other => panic!("want Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn order_starts_at_the_last_answer() {
        let addrs: Vec<String> = vec!["a:1".into(), "b:2".into(), "c:3".into()];
        let mut e = Endpoints::new(&addrs, Duration::from_secs(1));
        assert_eq!(e.order(), vec![0, 1, 2]);
        e.prefer(2);
        assert_eq!(e.order(), vec![2, 0, 1]);
    }
}
