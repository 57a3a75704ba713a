//! The workload: concurrent clients, one request at a time each, every request to a random
//! node on a random key, half PUTs of unique values and half GETs. Every operation is
//! recorded with its invocation and completion time and its outcome: ok; failed (a 503 write
//! or a refused connection, known not to have happened); unknown (a 504, a timeout, a reset).
//! An answer outside the contract (PUT: 204/503/504; GET: 200/404/503) is also collected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coordinate_check::{Call, Operation, Outcome, Time};
use coordinate_client::{ClientError, ClientTls, Connection, Response};

use crate::interrupt::interrupted;
use crate::rng::Rng;

/// What a client may do. The `/v1` delete and compare-and-set join here, with a [`Call`] and a
/// rule in the checker's register model each. One caution for the checker: it leaves out an
/// unknown write that no read returned, which is exact only while reads are the only
/// observations; a failed compare-and-set or a successful delete can depend on a write without
/// reading its value, so with them such writes must stay in (returning at +infinity).
#[derive(Clone, Copy, Debug)]
enum OpKind {
    Put,
    Get,
}

/// What the workload needs to know.
#[derive(Clone)]
pub(crate) struct Workload {
    /// Client address of node `i + 1`.
    pub addrs: Vec<String>,
    /// TLS for the client connections (`--tls`).
    pub tls: Option<ClientTls>,
    pub keys: Vec<String>,
    pub clients: usize,
    pub timeout: Duration,
    pub think: Duration,
    pub epoch: Instant,
    pub deadline: Instant,
    pub seed: u64,
}

/// Answers outside the contract, with where they came from.
pub(crate) type Unexpected = Vec<String>;

impl Workload {
    /// Runs every client until the deadline; returns their operations (in no particular order)
    /// and the answers that fell outside the contract.
    pub fn run(self) -> (Vec<Operation>, Unexpected) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return (Vec::new(), vec![format!("cannot start a runtime: {e}")]),
        };
        let w = Arc::new(self);
        rt.block_on(async {
            let tasks: Vec<_> = (0..w.clients)
                .map(|c| tokio::spawn(client(w.clone(), c)))
                .collect();
            let mut ops = Vec::new();
            let mut unexpected = Vec::new();
            for t in tasks {
                match t.await {
                    Ok((o, u)) => {
                        ops.extend(o);
                        unexpected.extend(u);
                    }
                    Err(e) => unexpected.push(format!("a client task failed: {e}")),
                }
            }
            (ops, unexpected)
        })
    }

    fn now(&self) -> Time {
        self.epoch.elapsed().as_nanos() as Time
    }
}

/// One client's state: its connections (one per node), its randomness, its next value.
struct ClientState {
    id: usize,
    rng: Rng,
    conns: Vec<Connection>,
    seq: u64,
    unexpected: Unexpected,
}

/// One client: one request at a time, each to a random node, on a random key.
async fn client(w: Arc<Workload>, id: usize) -> (Vec<Operation>, Unexpected) {
    let mut c = ClientState {
        id,
        rng: Rng::new(w.seed ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
        conns: w
            .addrs
            .iter()
            .map(|a| Connection::new(a.clone(), w.timeout).with_tls(w.tls.clone()))
            .collect(),
        seq: 0,
        unexpected: Vec::new(),
    };
    let mut ops = Vec::new();
    while Instant::now() < w.deadline && !interrupted() {
        let node = c.rng.below(c.conns.len() as u64) as usize;
        let key = w.keys[c.rng.below(w.keys.len() as u64) as usize].clone();
        let kind = if c.rng.chance(0.5) {
            OpKind::Put
        } else {
            OpKind::Get
        };
        let op = match kind {
            OpKind::Put => c.put(&w, node, key).await,
            OpKind::Get => c.get(&w, node, key).await,
        };
        // Like a real client, back off a little after an error (a dead node refuses
        // connections at once; without this most operations would be refusals).
        let backoff = if matches!(op.outcome, Outcome::Ok | Outcome::Read(_)) {
            0
        } else {
            20 + c.rng.below(30)
        };
        ops.push(op);
        let think = w.think.as_millis() as u64 + 1;
        tokio::time::sleep(Duration::from_millis(backoff + c.rng.below(think))).await;
    }
    (ops, c.unexpected)
}

impl ClientState {
    /// A PUT of this client's next unique value.
    async fn put(&mut self, w: &Workload, node: usize, key: String) -> Operation {
        let value = format!("c{}-{}", self.id, self.seq);
        self.seq += 1;
        let invoke = w.now();
        let r = self.conns[node].put(&key, Bytes::from(value.clone())).await;
        let complete = w.now();
        let (outcome, detail) = write_outcome(r, &key, node, &mut self.unexpected);
        Operation {
            id: 0,
            client: self.id,
            node: node as u64 + 1,
            key,
            call: Call::Put(value),
            invoke,
            complete,
            outcome,
            detail,
        }
    }

    async fn get(&mut self, w: &Workload, node: usize, key: String) -> Operation {
        let invoke = w.now();
        let r = self.conns[node].get(&key).await;
        let complete = w.now();
        let (outcome, detail) = read_outcome(r, &key, node, &mut self.unexpected);
        Operation {
            id: 0,
            client: self.id,
            node: node as u64 + 1,
            key,
            call: Call::Get,
            invoke,
            complete,
            outcome,
            detail,
        }
    }
}

/// The outcome of a PUT.
fn write_outcome(
    r: Result<Response, ClientError>,
    key: &str,
    node: usize,
    unexpected: &mut Unexpected,
) -> (Outcome, String) {
    match r {
        Ok(resp) => match resp.status.as_u16() {
            204 => (Outcome::Ok, String::new()),
            503 => (Outcome::Fail, "503".to_string()),
            504 => (Outcome::Unknown, "504".to_string()),
            s => unexpected_answer("PUT", key, node, s, &resp, unexpected),
        },
        Err(e) => no_answer(&e),
    }
}

/// The outcome of a GET.
pub(crate) fn read_outcome(
    r: Result<Response, ClientError>,
    key: &str,
    node: usize,
    unexpected: &mut Unexpected,
) -> (Outcome, String) {
    match r {
        Ok(resp) => match resp.status.as_u16() {
            200 => match String::from_utf8(resp.body.to_vec()) {
                Ok(v) => (Outcome::Read(Some(v)), String::new()),
                Err(_) => {
                    unexpected.push(format!("GET /{key} on node {}: non-UTF-8 value", node + 1));
                    (Outcome::Unknown, "non-UTF-8 value".into())
                }
            },
            404 => (Outcome::Read(None), String::new()),
            503 => (Outcome::Fail, "503".into()),
            s => unexpected_answer("GET", key, node, s, &resp, unexpected),
        },
        Err(e) => no_answer(&e),
    }
}

/// A status the workload does not expect: recorded, and its outcome unknown.
fn unexpected_answer(
    method: &str,
    key: &str,
    node: usize,
    status: u16,
    resp: &Response,
    unexpected: &mut Unexpected,
) -> (Outcome, String) {
    unexpected.push(format!(
        "{method} /{key} on node {}: {status} {}",
        node + 1,
        String::from_utf8_lossy(&resp.body).trim()
    ));
    (Outcome::Unknown, status.to_string())
}

/// A request that got no answer.
fn no_answer(e: &ClientError) -> (Outcome, String) {
    match e {
        // Nothing was sent: the request certainly did not happen.
        ClientError::Connect { .. } => (Outcome::Fail, "connect".to_string()),
        ClientError::Timeout(_) => (Outcome::Unknown, "timeout".to_string()),
        e => (Outcome::Unknown, short(&e.to_string())),
    }
}

/// The first line of an error, bounded.
pub(crate) fn short(s: &str) -> String {
    short_line(s.lines().next().unwrap_or(""), 80)
}

/// At most `n` characters of `s`.
pub(crate) fn short_line(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
