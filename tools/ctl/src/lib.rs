//! `coordinatectl`: the operator's and script's client for coordinate's `/v1` API.
//!
//! The binary (`src/bin/coordinatectl.rs`) turns flags into a [`Command`] and [`Options`];
//! this module runs it against the endpoints and prints the result.
//!
//! ## Endpoints and failover
//! `--endpoints` are tried in order ([`coordinate_client::failover`]): a connection error or a `503` (no leader,
//! no quorum; the write was not applied) moves on to the next endpoint; a `504`, or a write
//! whose connection broke after it was sent, stops with "outcome unknown" — repeating it
//! elsewhere could apply it twice. A `4xx` is the cluster's answer and is not retried
//! elsewhere (except `421`, which asks for another node).
//!
//! ## Output
//! Without `--json`, output is for people: tables for `ls`, `members` and `status`, one line
//! per watch event, values as text when they are UTF-8. `get` writes the raw value (bytes
//! exactly as stored when stdout is not a terminal, so `$(coordinatectl get k)` and
//! redirections work). With `--json`, the server's JSON answer is printed as it came
//! (for `get`, a JSON object built from the value and its revision headers; for `ls`, the
//! pages merged into one answer; for watches, one JSON object per line).
//!
//! ## Exit codes ([`Exit`])
//! `0` success; `1` the cluster refused (not found, precondition failed, conflict, bad
//! request: its reason is printed), a lease is gone or a lock was lost; `2` usage error; `3`
//! unavailable or outcome unknown. `lock -- cmd` exits with the command's status (see
//! `lock`), and `lock`/`elect` interrupted while waiting with 130.
//!
//! ## Long-running commands
//! `watch` (module `watch`), `lease keep-alive` (module `lease`, with the background
//! keeper of leases), `lock` and `elect` (module `lock`: etcd's concurrency recipes). The
//! last three catch SIGINT/SIGTERM (`Interrupts`) so that they always clean up.

mod certs;
pub mod cli;
pub mod http;
mod lease;
mod lock;
pub mod output;
mod watch;

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use coordinate_client::{
    CallError, Client, ClientTls, Consistency, Endpoints, Error, ListOptions, Request, Response,
};
pub use coordinate_client::{Condition, MAX_PAGE};

/// How the CLI ended; the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Not found, precondition failed, or another refusal by the cluster.
    Refused = 1,
    /// The command line was wrong.
    Usage = 2,
    /// No endpoint could serve the request, or a write's outcome is unknown.
    Unavailable = 3,
}

/// Global flags.
#[derive(Clone, Debug)]
pub struct Options {
    /// `host:port` of each endpoint, in the order to try them.
    pub endpoints: Vec<String>,
    /// Print JSON instead of human output.
    pub json: bool,
    /// Per-request deadline (connect, send, answer); above the server's own request timeout,
    /// so a slow cluster is seen as its 503/504 rather than as silence.
    pub timeout: Duration,
    /// TLS for every endpoint (`--cacert`, `--cert`, `--key`, `--insecure-skip-tls-verify`).
    pub tls: Option<ClientTls>,
}

impl Options {
    /// A typed client of the endpoints.
    pub fn client(&self) -> Client {
        Client::with_tls(&self.endpoints, self.timeout, self.tls.clone())
    }

    /// The endpoints, for raw requests.
    pub fn endpoint_list(&self) -> Endpoints {
        Endpoints::with_tls(&self.endpoints, self.timeout, self.tls.clone())
    }
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get {
        key: String,
        serializable: bool,
        /// Read the value as it was at this revision (0: now).
        revision: u64,
    },
    Put {
        key: String,
        value: Bytes,
        condition: Condition,
        /// Attach the key to this lease (0: none).
        lease: i64,
    },
    Del {
        key: String,
        prefix: bool,
        condition: Condition,
    },
    Ls {
        prefix: String,
        /// Most keys to list in total.
        limit: Option<usize>,
        /// Keys per request.
        page_size: usize,
        serializable: bool,
    },
    Watch {
        key: String,
        prefix: bool,
        from_revision: Option<u64>,
    },
    Members,
    MemberAdd {
        id: u64,
        peer_url: String,
        learner: bool,
    },
    MemberRemove {
        id: u64,
    },
    MemberPromote {
        id: u64,
    },
    Status {
        all: bool,
    },
    Health,
    LeaseGrant {
        ttl: i64,
        /// 0: the server picks one.
        id: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseKeepAlive {
        id: i64,
        once: bool,
    },
    LeaseTtl {
        id: i64,
        keys: bool,
    },
    LeaseList,
    Compact {
        revision: u64,
    },
    Alarms {
        disarm: bool,
    },
    /// Hold the lock `name` (until interrupted, or while `command` runs).
    Lock {
        name: String,
        ttl: i64,
        command: Vec<String>,
    },
    /// Campaign with `proposal`, or observe the leader when `None`.
    Elect {
        name: String,
        proposal: Option<String>,
        ttl: i64,
    },
    /// Make a development CA and certificates (no server is contacted).
    Certs {
        dir: std::path::PathBuf,
        peers: Vec<String>,
        hosts: Vec<String>,
    },
}

/// A command that did not succeed: its exit code, what to tell the user, and (for `--json`)
/// the server's JSON answer.
#[derive(Debug)]
pub struct Failed {
    pub exit: Exit,
    pub message: String,
    pub json: Option<Bytes>,
    /// The process exit code when it is not `exit`'s: `lock -- cmd` exits with the
    /// command's.
    pub code: Option<u8>,
}

impl Failed {
    fn new(exit: Exit, message: impl Into<String>) -> Failed {
        Failed {
            exit,
            message: message.into(),
            json: None,
            code: None,
        }
    }

    /// A failure that exits with `code`.
    fn with_code(code: u8, message: impl Into<String>) -> Failed {
        Failed {
            code: Some(code),
            ..Failed::new(Exit::Refused, message)
        }
    }

    /// The process exit code.
    pub fn code(&self) -> u8 {
        self.code.unwrap_or(self.exit as u8)
    }
}

/// A typed call's failure: a refusal exits by its status (with the server's JSON for
/// `--json`), no answer or an unknown outcome with 3.
fn failed(e: Error) -> Failed {
    let message = e.to_string();
    match e {
        Error::Call(_) | Error::Invalid { .. } => Failed::new(Exit::Unavailable, message),
        Error::Refused { status, body, .. } => Failed {
            json: serde_json::from_slice::<Value>(&body)
                .is_ok()
                .then_some(body),
            ..Failed::new(exit_for(status), message)
        },
    }
}

/// SIGINT and SIGTERM, caught from the moment [`Interrupts::catch`] is called, so that a
/// long-running command (`lock`, `elect`, `lease keep-alive`) always gets to clean up (revoke
/// its lease). Other commands do not catch them: Ctrl-C ends them at once.
#[derive(Clone)]
pub(crate) struct Interrupts(tokio::sync::watch::Receiver<bool>);

impl Interrupts {
    /// Installs the handlers (within the runtime). If they cannot be installed, [`wait`]
    /// never resolves and the signals keep their default action.
    ///
    /// [`wait`]: Interrupts::wait
    pub(crate) fn catch() -> Interrupts {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                let _ = tx.send(true);
            });
        }
        Interrupts(rx)
    }

    /// Resolves once SIGINT or SIGTERM arrived (at once if one already did).
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|&caught| caught).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl From<CallError> for Failed {
    fn from(e: CallError) -> Failed {
        Failed::new(Exit::Unavailable, e.to_string())
    }
}

/// The exit code of a final, unsuccessful answer: 5xx is unavailability, the rest refusals.
pub fn exit_for(status: StatusCode) -> Exit {
    if status.is_success() {
        Exit::Ok
    } else if status.is_server_error() {
        Exit::Unavailable
    } else {
        Exit::Refused
    }
}

/// An answer that is not the expected success.
fn refused(what: &str, endpoint: &str, reply: &Response) -> Failed {
    Failed {
        exit: exit_for(reply.status),
        message: format!(
            "{what}: {} ({} from {endpoint})",
            reply.reason(),
            reply.status.as_u16()
        ),
        json: reply.is_json().then(|| reply.body.clone()),
        code: None,
    }
}

/// Where output goes, and in which form.
pub(crate) struct Out {
    pub json: bool,
    pub terminal: bool,
}

impl Out {
    /// Writes text to stdout (a closed pipe ends the program quietly, like other tools).
    pub fn text(&self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn bytes(&self, b: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        if stdout.write_all(b).and_then(|_| stdout.flush()).is_err() {
            std::process::exit(Exit::Ok as i32);
        }
    }

    /// A JSON document on one line.
    pub fn json(&self, v: &Value) {
        self.text(&format!("{v}\n"));
    }

    /// A JSON body as the server sent it, on one line.
    pub fn raw_json(&self, body: &[u8]) {
        let mut b = body.trim_ascii_end().to_vec();
        b.push(b'\n');
        self.bytes(&b);
    }
}

/// Runs `cmd`; prints its output and any error; returns the process exit code (an
/// [`Exit`], or the command's status for `lock -- cmd`).
pub fn run(opts: Options, cmd: Command) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("coordinatectl: cannot start the async runtime: {e}");
            return Exit::Unavailable as u8;
        }
    };
    let out = Out {
        json: opts.json,
        terminal: std::io::stdout().is_terminal(),
    };
    let result = runtime.block_on(execute(&opts, cmd, &out));
    // A command still running in the background (a lock's keeper) ends here.
    runtime.shutdown_background();
    match result {
        Ok(()) => Exit::Ok as u8,
        Err(failed) => {
            if let (true, Some(body)) = (opts.json, failed.json.as_ref()) {
                out.raw_json(body);
            }
            eprintln!("coordinatectl: {}", failed.message);
            failed.code()
        }
    }
}

fn consistency(serializable: bool) -> Consistency {
    if serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    }
}

fn parse_json(what: &str, reply: &Response) -> Result<Value, Failed> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        Failed::new(
            Exit::Unavailable,
            format!("{what}: the answer is not valid JSON: {e}"),
        )
    })
}

async fn execute(opts: &Options, cmd: Command, out: &Out) -> Result<(), Failed> {
    let mut eps = opts.endpoint_list();
    let mut client = opts.client();
    match cmd {
        Command::Get {
            key,
            serializable,
            revision,
        } => get(&mut eps, out, &key, serializable, revision).await,
        Command::Put {
            key,
            value,
            condition,
            lease,
        } => {
            let req = Request::kv_put_with_lease(&key, value, condition, lease);
            let what = format!("put {key:?}");
            let (_, reply) = expect(&mut eps, &req, StatusCode::OK, &what).await?;
            if out.json {
                out.raw_json(&reply.body);
            } else {
                let rev = parse_json("put", &reply)?["revision"].clone();
                out.text(&format!("wrote {key} at revision {rev}\n"));
            }
            Ok(())
        }
        Command::Del {
            key,
            prefix,
            condition,
        } => delete(&mut eps, out, key, prefix, condition).await,
        Command::Ls {
            prefix,
            limit,
            page_size,
            serializable,
        } => list(&mut eps, out, &prefix, limit, page_size, serializable).await,
        Command::Watch {
            key,
            prefix,
            from_revision,
        } => watch::run(&mut eps, out, &key, prefix, from_revision).await,
        Command::Members => {
            let req = Request::members();
            let (_, reply) = expect(&mut eps, &req, StatusCode::OK, "members").await?;
            if out.json {
                out.raw_json(&reply.body);
            } else {
                let members = parse_json("members", &reply)?;
                let list = members.as_array().cloned().unwrap_or_default();
                out.text(&output::members_table(&list));
            }
            Ok(())
        }
        Command::MemberAdd {
            id,
            peer_url,
            learner,
        } => member_add(&mut eps, out, id, &peer_url, learner).await,
        Command::MemberRemove { id } => {
            let req = Request::member_remove(id);
            let what = format!("remove member {id}");
            expect(&mut eps, &req, StatusCode::NO_CONTENT, &what).await?;
            if out.json {
                out.json(&json!({ "id": id, "removed": true }));
            } else {
                out.text(&format!("removed member {id}\n"));
            }
            Ok(())
        }
        Command::MemberPromote { id } => {
            let req = Request::member_promote(id);
            let what = format!("promote member {id}");
            expect(&mut eps, &req, StatusCode::NO_CONTENT, &what).await?;
            if out.json {
                out.json(&json!({ "id": id, "promoted": true }));
            } else {
                out.text(&format!("promoted member {id} to voter\n"));
            }
            Ok(())
        }
        Command::Status { all: false } => {
            let req = Request::status();
            let (endpoint, reply) = expect(&mut eps, &req, StatusCode::OK, "status").await?;
            if out.json {
                out.raw_json(&reply.body);
            } else {
                let status = parse_json("status", &reply)?;
                out.text(&output::status_text(&endpoint, &status));
            }
            Ok(())
        }
        Command::Status { all: true } => status_all(&mut eps, out).await,
        Command::Health => health(&mut eps, out).await,
        Command::LeaseGrant { ttl, id } => lease::grant(&mut client, out, ttl, id).await,
        Command::LeaseRevoke { id } => lease::revoke(&mut client, out, id).await,
        Command::LeaseKeepAlive { id, once } => lease::keep_alive(&mut client, out, id, once).await,
        Command::LeaseTtl { id, keys } => lease::time_to_live(&mut client, out, id, keys).await,
        Command::LeaseList => lease::list(&mut client, out).await,
        Command::Compact { revision } => lease::compact(&mut client, out, revision).await,
        Command::Alarms { disarm } => lease::alarms(&mut client, out, disarm).await,
        Command::Lock { name, ttl, command } => lock::lock(opts, out, &name, ttl, &command).await,
        Command::Elect {
            name,
            proposal: Some(proposal),
            ttl,
        } => lock::campaign(opts, out, &name, &proposal, ttl).await,
        Command::Elect {
            name,
            proposal: None,
            ..
        } => lock::observe(opts, out, &name).await,
        Command::Certs { dir, peers, hosts } => {
            for name in certs::write(&dir, &peers, &hosts)? {
                out.text(&format!("{}\n", dir.join(name).display()));
            }
            Ok(())
        }
    }
}

/// Sends `req` with failover; the endpoint and its answer if the status is `want`.
async fn expect(
    eps: &mut Endpoints,
    req: &Request,
    want: StatusCode,
    what: &str,
) -> Result<(String, Response), Failed> {
    let (endpoint, reply) = eps.call(req).await?;
    if reply.status != want {
        return Err(refused(what, &endpoint, &reply));
    }
    Ok((endpoint, reply))
}

async fn get(
    eps: &mut Endpoints,
    out: &Out,
    key: &str,
    serializable: bool,
    revision: u64,
) -> Result<(), Failed> {
    let req = Request::kv_get_at(key, consistency(serializable), revision);
    let what = format!("get {key:?}");
    let (_, reply) = expect(eps, &req, StatusCode::OK, &what).await?;
    if out.json {
        out.json(&output::get_json(
            key,
            &reply.body,
            reply.number("x-coordinate-create-revision"),
            reply.number("etag"),
            reply.number("x-coordinate-version"),
            reply.number("x-coordinate-revision"),
        ));
    } else if out.terminal {
        out.text(&output::terminal_text(&reply.body));
    } else {
        out.bytes(&reply.body);
    }
    Ok(())
}

async fn member_add(
    eps: &mut Endpoints,
    out: &Out,
    id: u64,
    peer_url: &str,
    learner: bool,
) -> Result<(), Failed> {
    let req = Request::member_add(id, peer_url, learner);
    let what = format!("add member {id}");
    let (_, reply) = expect(eps, &req, StatusCode::CREATED, &what).await?;
    if out.json {
        out.raw_json(&reply.body);
    } else {
        let role = if learner { "learner" } else { "voter" };
        let members = parse_json("add member", &reply)?;
        let list = members.as_array().cloned().unwrap_or_default();
        out.text(&format!(
            "added member {id} as a {role}\n{}",
            output::members_table(&list)
        ));
    }
    Ok(())
}

async fn delete(
    eps: &mut Endpoints,
    out: &Out,
    key: String,
    prefix: bool,
    condition: Condition,
) -> Result<(), Failed> {
    let req = if prefix {
        Request::kv_delete_prefix(&key).condition(condition)
    } else {
        Request::kv_delete(&key, condition)
    };
    let (endpoint, reply) = eps.call(&req).await?;
    let revision = reply.number("x-coordinate-revision");
    match reply.status {
        StatusCode::NO_CONTENT if !prefix => {
            if out.json {
                out.json(&json!({ "key": key, "deleted": 1, "revision": revision }));
            } else {
                let rev = revision.map_or("?".to_string(), |r| r.to_string());
                out.text(&format!("deleted {key} at revision {rev}\n"));
            }
            Ok(())
        }
        StatusCode::OK if prefix => {
            if out.json {
                out.raw_json(&reply.body);
            } else {
                let body = parse_json("delete", &reply)?;
                let n = body["deleted"].as_u64().unwrap_or(0);
                let rev = &body["revision"];
                let keys = if n == 1 { "key" } else { "keys" };
                out.text(&format!(
                    "deleted {n} {keys} with prefix {key:?} (revision {rev})\n"
                ));
            }
            Ok(())
        }
        _ => Err(refused(&format!("delete {key:?}"), &endpoint, &reply)),
    }
}

async fn list(
    eps: &mut Endpoints,
    out: &Out,
    prefix: &str,
    limit: Option<usize>,
    page_size: usize,
    serializable: bool,
) -> Result<(), Failed> {
    let mut kvs: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    let (more, revision) = loop {
        let want = match limit {
            Some(l) => page_size.min(l - kvs.len()),
            None => page_size,
        };
        let options = ListOptions {
            limit: Some(want),
            start_after: after.clone(),
            consistency: consistency(serializable),
        };
        let (endpoint, reply) = eps.call(&Request::kv_list(prefix, &options)).await?;
        if reply.status != StatusCode::OK {
            return Err(refused(&format!("ls {prefix:?}"), &endpoint, &reply));
        }
        let page = parse_json("ls", &reply)?;
        let items = page["kvs"].as_array().cloned().unwrap_or_default();
        let more = page["more"].as_bool().unwrap_or(false);
        after = items
            .last()
            .and_then(|kv| kv["key"].as_str())
            .map(String::from);
        kvs.extend(items);
        let full = limit.is_some_and(|l| kvs.len() >= l);
        if !more || full || after.is_none() {
            break (more, page["revision"].clone());
        }
    };
    if out.json {
        out.json(&json!({ "kvs": kvs, "more": more, "revision": revision }));
    } else if !kvs.is_empty() {
        out.text(&output::kvs_table(&kvs, out.terminal));
    }
    if more && !out.json {
        eprintln!("coordinatectl: more keys follow; raise --limit to see them");
    }
    Ok(())
}

async fn status_all(eps: &mut Endpoints, out: &Out) -> Result<(), Failed> {
    let mut rows = Vec::new();
    for i in 0..eps.len() {
        let conn = eps.conn(i);
        let endpoint = conn.addr().to_string();
        let status = match conn.send(&Request::status()).await {
            Ok(r) if r.status == StatusCode::OK => {
                serde_json::from_slice::<Value>(&r.body).map_err(|e| e.to_string())
            }
            Ok(r) => Err(format!("{} ({})", r.reason(), r.status.as_u16())),
            Err(f) => Err(f.reason()),
        };
        rows.push((endpoint, status));
    }
    if out.json {
        let docs: Vec<Value> = rows
            .iter()
            .map(|(endpoint, s)| match s {
                Ok(Value::Object(obj)) => {
                    let mut obj = obj.clone();
                    obj.insert("endpoint".into(), Value::String(endpoint.clone()));
                    Value::Object(obj)
                }
                Ok(other) => json!({ "endpoint": endpoint, "status": other }),
                Err(e) => json!({ "endpoint": endpoint, "error": e }),
            })
            .collect();
        out.json(&Value::Array(docs));
    } else {
        out.text(&output::status_table(&rows));
    }
    let failed = rows.iter().filter(|(_, s)| s.is_err()).count();
    if failed > 0 {
        return Err(Failed::new(
            Exit::Unavailable,
            format!("{failed} of {} endpoints did not answer", rows.len()),
        ));
    }
    Ok(())
}

/// Every endpoint's `/health`; success only if all are healthy.
async fn health(eps: &mut Endpoints, out: &Out) -> Result<(), Failed> {
    let mut docs = Vec::new();
    let mut unhealthy = 0;
    for i in 0..eps.len() {
        let conn = eps.conn(i);
        let endpoint = conn.addr().to_string();
        let doc = match conn.send(&Request::health()).await {
            Ok(r) if r.status == StatusCode::OK => {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                json!({ "endpoint": endpoint, "health": "ok", "leader": body["leader"] })
            }
            Ok(r) => {
                json!({ "endpoint": endpoint, "health": "unhealthy", "reason": r.reason() })
            }
            Err(f) => {
                json!({ "endpoint": endpoint, "health": "unreachable", "reason": f.reason() })
            }
        };
        if doc["health"] != "ok" {
            unhealthy += 1;
        }
        docs.push(doc);
    }
    let total = docs.len();
    if out.json {
        out.json(&Value::Array(docs));
    } else {
        let mut text = String::new();
        for d in &docs {
            let endpoint = d["endpoint"].as_str().unwrap_or("");
            let reason = d["reason"].as_str().unwrap_or("");
            text.push_str(&match d["health"].as_str() {
                Some("ok") => format!("{endpoint} is healthy (leader {})\n", d["leader"]),
                Some("unhealthy") => format!("{endpoint} is unhealthy: {reason}\n"),
                _ => format!("{endpoint} is unreachable: {reason}\n"),
            });
        }
        out.text(&text);
    }
    if unhealthy > 0 {
        return Err(Failed::new(
            Exit::Unavailable,
            format!("{unhealthy} of {total} endpoints are not healthy"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_status() {
        assert_eq!(exit_for(StatusCode::OK), Exit::Ok);
        assert_eq!(exit_for(StatusCode::NO_CONTENT), Exit::Ok);
        for s in [400, 404, 409, 410, 412, 413, 421] {
            assert_eq!(
                exit_for(StatusCode::from_u16(s).unwrap()),
                Exit::Refused,
                "{s}"
            );
        }
        for s in [500, 503, 504] {
            assert_eq!(
                exit_for(StatusCode::from_u16(s).unwrap()),
                Exit::Unavailable,
                "{s}"
            );
        }
    }

    #[test]
    fn refusals_carry_the_reason_and_the_json() {
        let reply = Response::new(
            StatusCode::PRECONDITION_FAILED,
            Bytes::from_static(
                br#"{"current_revision":3,"error":"precondition failed: the key's mod_revision is 3"}"#,
            ),
        );
        let f = refused("put \"k\"", "127.0.0.1:1", &reply);
        assert_eq!(f.exit, Exit::Refused);
        assert_eq!(
            f.message,
            "put \"k\": precondition failed: the key's mod_revision is 3 (412 from 127.0.0.1:1)"
        );
        assert!(f.json.is_some());
    }
}
