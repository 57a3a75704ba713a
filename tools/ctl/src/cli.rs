//! `coordinatectl`: flags → a [`ctl::Command`] → run against the endpoints → exit code.
//! Everything but the flags lives in the crate root.
//!
//! Exit codes: 0 success, 1 refused by the cluster (not found, precondition failed, ...),
//! 2 usage error, 3 unavailable or outcome unknown.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use crate as ctl;
use crate::{http::parse_endpoint, Command, Condition, Exit, Options};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use coordinate_client::{is_https, ClientTls, TlsSpec};

/// A client for coordinate's HTTP API.
#[derive(Debug, Parser)]
#[command(
    name = "coordinatectl",
    version,
    // The text `--help` has always shown (the description of the one crate it came from).
    about = "A small, strongly consistent distributed key-value store on Raft",
    max_term_width = 100,
    args_override_self = true
)]
struct Cli {
    /// Comma-separated client endpoints (host:port), tried in order until one can serve the
    /// request.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:12380",
        action = clap::ArgAction::Set
    )]
    endpoints: Vec<String>,
    /// Print the server's JSON instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for each answer (the server's own request timeout is 5 s).
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECONDS")]
    timeout: f64,
    /// Speak TLS, verifying the nodes against this CA (PEM); etcdctl's flag.
    #[arg(long, global = true, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// A client certificate (PEM), for nodes started with --client-cert-auth.
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// The key of --cert (PEM). (Its id is not `key`: subcommands have a `key` argument.)
    #[arg(long = "key", id = "tls_key", global = true, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Speak TLS without verifying the nodes (for --auto-tls nodes): encrypted, not
    /// authenticated.
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print a key's value (linearizable unless --serializable).
    Get {
        key: String,
        /// Read this node's state without a quorum round: fast, possibly stale.
        #[arg(long)]
        serializable: bool,
        /// Read the value as it was at revision N (not compacted yet).
        #[arg(long = "rev", value_name = "N")]
        revision: Option<u64>,
    },
    /// Write a value (`-` reads it from stdin).
    Put {
        key: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Only if the key's mod_revision is REV.
        #[arg(long, value_name = "REV", conflicts_with = "if_absent")]
        if_match: Option<u64>,
        /// Only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
        /// Attach the key to lease ID: it is deleted when the lease expires or is revoked.
        #[arg(long, value_name = "ID")]
        lease: Option<i64>,
    },
    /// Delete a key, or every key under a prefix.
    Del {
        key: String,
        /// Delete every key starting with KEY.
        #[arg(long, conflicts_with = "if_match")]
        prefix: bool,
        /// Only if the key's mod_revision is REV.
        #[arg(long, value_name = "REV")]
        if_match: Option<u64>,
    },
    /// List the keys starting with a prefix (all keys without one), in key order.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        /// List at most N keys.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keys fetched per request (each page is one read).
        #[arg(long, value_name = "N", default_value_t = 1000)]
        page_size: usize,
        /// Read without a quorum round: fast, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Print changes to a key (or a prefix) as they happen, until interrupted.
    Watch {
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start at this revision (earlier changes still in the server's window are
        /// replayed) instead of now.
        #[arg(long, value_name = "N")]
        from_revision: Option<u64>,
    },
    /// List the cluster's members.
    Members,
    /// Change the membership.
    Member {
        #[command(subcommand)]
        action: MemberCmd,
    },
    /// This node's view: role, leader, term, indexes, revision, members.
    Status {
        /// Ask every endpoint, one row each.
        #[arg(long)]
        all: bool,
    },
    /// Check every endpoint's /health; exit 0 only if all are healthy.
    Health,
    /// Leases: keys that are deleted when their lease expires or is revoked.
    Lease {
        #[command(subcommand)]
        action: LeaseCmd,
    },
    /// Forget every revision before REVISION (reads and watches before it fail).
    Compact { revision: u64 },
    /// The alarms raised (NOSPACE: the store is above its quota).
    Alarm {
        #[command(subcommand)]
        action: AlarmCmd,
    },
    /// Hold a lock until interrupted, or while a command runs (`lock NAME -- cmd args`).
    /// Released when the command ends, on SIGINT/SIGTERM, or when the holder dies (its lease
    /// expires).
    Lock {
        name: String,
        /// The lease's TTL in seconds: how long a holder that died keeps the lock.
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TTL)]
        ttl: i64,
        /// The command to run while holding the lock; its exit status is ours.
        #[arg(last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Campaign to lead NAME with PROPOSAL (print it once elected, lead until interrupted),
    /// or, without PROPOSAL or with --listen, print the leader's proposal at every change.
    Elect {
        name: String,
        proposal: Option<String>,
        /// Observe instead of campaigning.
        #[arg(long, conflicts_with = "proposal")]
        listen: bool,
        /// The campaign's lease TTL in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TTL)]
        ttl: i64,
    },
    /// Write a development CA and certificates into DIR (no server is contacted): ca.pem,
    /// node-<i>.pem and node-<i>-key.pem for the i-th --peers URL (which it names, so members
    /// on one host are told apart), client.pem and client-key.pem. Never overwrites.
    Certs {
        dir: PathBuf,
        /// The members' peer URLs, as in --cluster.
        #[arg(long, value_delimiter = ',', default_value = "https://127.0.0.1:12379")]
        peers: Vec<String>,
        /// More host names (IP addresses or DNS names) for every member certificate, e.g.
        /// the client port's host when it differs.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
    },
}

/// The TTL of `lock` and `elect` leases, like etcdctl's.
const DEFAULT_TTL: i64 = 10;

#[derive(Debug, Subcommand)]
enum LeaseCmd {
    /// Grant a lease of TTL seconds; prints its id.
    Grant {
        ttl: i64,
        /// Ask for this id instead of one the server picks.
        #[arg(long)]
        id: Option<i64>,
    },
    /// Revoke a lease, deleting its keys.
    Revoke { id: i64 },
    /// Keep a lease alive (every TTL/3) until interrupted; exits 1 once it is gone.
    KeepAlive {
        id: i64,
        /// One keep-alive, then exit.
        #[arg(long)]
        once: bool,
    },
    /// A lease's time left and granted TTL.
    Ttl {
        id: i64,
        /// Also list its keys.
        #[arg(long)]
        keys: bool,
    },
    /// Every lease's id.
    List,
}

#[derive(Debug, Subcommand)]
enum AlarmCmd {
    /// The alarms raised.
    List,
    /// Disarm NOSPACE (after compacting and deleting enough).
    Disarm,
}

#[derive(Debug, Subcommand)]
enum MemberCmd {
    /// Add a node (then start it with --join).
    Add {
        id: u64,
        /// The new node's peer URL (http://host:port).
        peer_url: String,
        /// Add it as a non-voting learner (promote it once it has caught up).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node; it shuts itself down once it applies its removal.
    Remove { id: u64 },
    /// Make a caught-up learner a voter.
    Promote { id: u64 },
}

/// Validated options and command; `Err` is a usage error. `stdin` supplies `put <key> -`.
fn resolve(
    cli: Cli,
    stdin: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> Result<(Options, Command), String> {
    let options = options(&cli)?;
    let command = command(cli.cmd, stdin)?;
    Ok((options, command))
}

/// The global flags, validated.
fn options(cli: &Cli) -> Result<Options, String> {
    let endpoints = cli
        .endpoints
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| parse_endpoint(e))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err("--endpoints: give at least one host:port".into());
    }
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(format!(
            "--timeout {}: expected a positive number of seconds",
            cli.timeout
        ));
    }
    Ok(Options {
        tls: tls(cli)?,
        endpoints,
        json: cli.json,
        timeout: Duration::from_secs_f64(cli.timeout),
    })
}

/// TLS from the flags: on if any is given or any endpoint is `https://`.
fn tls(cli: &Cli) -> Result<Option<ClientTls>, String> {
    let https = cli.endpoints.iter().any(|e| is_https(e));
    let cert_and_key = match (&cli.cert, &cli.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    let wanted = https || cli.cacert.is_some() || cert_and_key.is_some();
    if !wanted && !cli.insecure_skip_tls_verify {
        return Ok(None);
    }
    if cli.cacert.is_none() && !cli.insecure_skip_tls_verify {
        return Err(
            "TLS needs --cacert (the CA of the nodes), or --insecure-skip-tls-verify".into(),
        );
    }
    let spec = TlsSpec {
        trusted_ca: cli.cacert.clone(),
        cert_and_key,
        insecure: cli.insecure_skip_tls_verify,
    };
    ClientTls::new(&spec).map(Some).map_err(|e| e.to_string())
}

/// The subcommand, validated; `stdin` supplies `put <key> -`.
fn command(cmd: Cmd, stdin: impl FnOnce() -> std::io::Result<Vec<u8>>) -> Result<Command, String> {
    Ok(match cmd {
        Cmd::Get {
            key,
            serializable,
            revision,
        } => Command::Get {
            key: non_empty(key)?,
            serializable,
            revision: revision.unwrap_or(0),
        },
        Cmd::Put {
            key,
            value,
            if_match,
            if_absent,
            lease,
        } => {
            let value = if value == "-" {
                Bytes::from(stdin().map_err(|e| format!("reading the value from stdin: {e}"))?)
            } else {
                Bytes::from(value)
            };
            Command::Put {
                key: non_empty(key)?,
                value,
                condition: condition(if_match, if_absent)?,
                lease: lease.map(lease_id).transpose()?.unwrap_or(0),
            }
        }
        Cmd::Del {
            key,
            prefix,
            if_match,
        } => Command::Del {
            // An empty prefix is every key: allowed, but only when asked for explicitly.
            key: if prefix { key } else { non_empty(key)? },
            prefix,
            condition: condition(if_match, false)?,
        },
        Cmd::Ls {
            prefix,
            limit,
            page_size,
            serializable,
        } => {
            if limit == Some(0) {
                return Err("--limit must be at least 1".into());
            }
            if !(1..=ctl::MAX_PAGE).contains(&page_size) {
                return Err(format!("--page-size must be 1 to {}", ctl::MAX_PAGE));
            }
            Command::Ls {
                prefix,
                limit,
                page_size,
                serializable,
            }
        }
        Cmd::Watch {
            key,
            prefix,
            from_revision,
        } => Command::Watch {
            key: if prefix { key } else { non_empty(key)? },
            prefix,
            from_revision,
        },
        Cmd::Members => Command::Members,
        Cmd::Member { action } => member_command(action)?,
        Cmd::Status { all } => Command::Status { all },
        Cmd::Health => Command::Health,
        Cmd::Lease { action } => lease_command(action)?,
        Cmd::Compact { revision } => Command::Compact {
            revision: if revision == 0 {
                return Err("revisions start at 1".into());
            } else {
                revision
            },
        },
        Cmd::Alarm { action } => Command::Alarms {
            disarm: matches!(action, AlarmCmd::Disarm),
        },
        Cmd::Lock { name, ttl, command } => Command::Lock {
            name: non_empty(name)?,
            ttl: ttl_seconds(ttl)?,
            command,
        },
        Cmd::Certs { dir, peers, hosts } => Command::Certs { dir, peers, hosts },
        Cmd::Elect {
            name,
            proposal,
            listen,
            ttl,
        } => Command::Elect {
            name: non_empty(name)?,
            proposal: proposal.filter(|_| !listen),
            ttl: ttl_seconds(ttl)?,
        },
    })
}

/// `lease grant|revoke|keep-alive|ttl|list`, validated.
fn lease_command(action: LeaseCmd) -> Result<Command, String> {
    Ok(match action {
        LeaseCmd::Grant { ttl, id } => Command::LeaseGrant {
            ttl: ttl_seconds(ttl)?,
            id: id.map(lease_id).transpose()?.unwrap_or(0),
        },
        LeaseCmd::Revoke { id } => Command::LeaseRevoke { id: lease_id(id)? },
        LeaseCmd::KeepAlive { id, once } => Command::LeaseKeepAlive {
            id: lease_id(id)?,
            once,
        },
        LeaseCmd::Ttl { id, keys } => Command::LeaseTtl {
            id: lease_id(id)?,
            keys,
        },
        LeaseCmd::List => Command::LeaseList,
    })
}

/// A lease id argument: positive.
fn lease_id(id: i64) -> Result<i64, String> {
    if id > 0 {
        Ok(id)
    } else {
        Err(format!("lease id {id}: lease ids are positive"))
    }
}

/// A TTL argument: positive seconds.
fn ttl_seconds(ttl: i64) -> Result<i64, String> {
    if ttl > 0 {
        Ok(ttl)
    } else {
        Err(format!("TTL {ttl}: expected a positive number of seconds"))
    }
}

/// `member add|remove|promote`, validated.
fn member_command(action: MemberCmd) -> Result<Command, String> {
    Ok(match action {
        MemberCmd::Add {
            id,
            peer_url,
            learner,
        } => Command::MemberAdd {
            id: positive(id)?,
            peer_url,
            learner,
        },
        MemberCmd::Remove { id } => Command::MemberRemove { id: positive(id)? },
        MemberCmd::Promote { id } => Command::MemberPromote { id: positive(id)? },
    })
}

/// A key argument, which must not be empty.
fn non_empty(key: String) -> Result<String, String> {
    if key.is_empty() {
        Err("the key must not be empty".to_string())
    } else {
        Ok(key)
    }
}

/// A node id argument: ids start at 1.
fn positive(id: u64) -> Result<u64, String> {
    if id == 0 {
        Err("node ids start at 1".to_string())
    } else {
        Ok(id)
    }
}

fn condition(if_match: Option<u64>, if_absent: bool) -> Result<Condition, String> {
    match (if_match, if_absent) {
        (Some(0), _) => {
            Err("--if-match: revisions start at 1 (use --if-absent for a new key)".into())
        }
        (Some(rev), false) => Ok(Condition::IfMatch(rev)),
        (None, true) => Ok(Condition::IfAbsent),
        (None, false) => Ok(Condition::Always),
        (Some(_), true) => Err("use --if-match or --if-absent, not both".into()),
    }
}

pub fn main() -> std::process::ExitCode {
    // clap prints usage errors and exits 2 itself (0 for --help and --version).
    let cli = Cli::parse();
    let (options, command) = match resolve(cli, || {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coordinatectl: {e}");
            return std::process::ExitCode::from(Exit::Usage as u8);
        }
    };
    std::process::ExitCode::from(ctl::run(options, command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Options, Command), String> {
        let cli = Cli::try_parse_from(std::iter::once("coordinatectl").chain(args.iter().copied()))
            .map_err(|e| format!("clap: {e}"))?;
        resolve(cli, || Ok(b"from stdin".to_vec()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).1
    }

    #[test]
    fn tls_flags_are_etcdctls_and_checked() {
        let (o, _) = parse(&["health"]).unwrap();
        assert!(o.tls.is_none());
        let (o, _) = parse(&["--insecure-skip-tls-verify", "health"]).unwrap();
        assert!(o.tls.is_some());
        let err = |args: &[&str]| parse(args).err().unwrap_or_default();
        assert!(err(&["--endpoints", "https://127.0.0.1:1", "health"]).contains("--cacert"));
        assert!(err(&["--cert", "c.pem", "get", "k"]).contains("--cert and --key go together"));
        assert!(err(&["--cacert", "/no/such/ca.pem", "health"]).contains("/no/such/ca.pem"));
        // `--key` is the TLS key, and `get <key>` still takes its key.
        let (o, cmd) = parse(&["--insecure-skip-tls-verify", "get", "config/db"]).unwrap();
        assert!(o.tls.is_some());
        assert!(matches!(cmd, Command::Get { key, .. } if key == "config/db"));
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options() {
        let (o, _) = parse(&["health"]).unwrap();
        assert_eq!(o.endpoints, vec!["127.0.0.1:12380"]);
        assert!(!o.json);
        assert_eq!(o.timeout, Duration::from_secs(10));
        // Global flags go before or after the subcommand; URLs are accepted.
        let (o, _) = parse(&[
            "get",
            "k",
            "--endpoints",
            "http://127.0.0.1:1,127.0.0.1:2/",
            "--json",
            "--timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(o.endpoints, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        assert!(o.json);
        assert_eq!(o.timeout, Duration::from_millis(500));
        // Given twice, the last one counts.
        let (o, _) = parse(&["--endpoints", "a:1", "health", "--endpoints", "b:2,c:3"]).unwrap();
        assert_eq!(o.endpoints, vec!["b:2", "c:3"]);
        assert!(parse(&["--endpoints", "nohost", "health"]).is_err());
        assert!(parse(&["--endpoints", ",", "health"]).is_err());
        assert!(parse(&["--timeout", "0", "health"]).is_err());
    }

    #[test]
    fn reads_and_writes() {
        assert_eq!(
            command(&["get", "a/b", "--serializable"]),
            Command::Get {
                key: "a/b".into(),
                serializable: true,
                revision: 0,
            }
        );
        assert_eq!(
            command(&["get", "a/b", "--rev", "4"]),
            Command::Get {
                key: "a/b".into(),
                serializable: false,
                revision: 4,
            }
        );
        assert_eq!(
            command(&["put", "k", "v", "--lease", "7587"]),
            Command::Put {
                key: "k".into(),
                value: Bytes::from("v"),
                condition: Condition::Always,
                lease: 7587,
            }
        );
        assert_eq!(
            command(&["put", "k", "-v-"]),
            Command::Put {
                key: "k".into(),
                value: Bytes::from("-v-"),
                condition: Condition::Always,
                lease: 0
            }
        );
        assert_eq!(
            command(&["put", "k", "-", "--if-match", "7"]),
            Command::Put {
                key: "k".into(),
                value: Bytes::from("from stdin"),
                condition: Condition::IfMatch(7),
                lease: 0
            }
        );
        assert_eq!(
            command(&["put", "k", "v", "--if-absent"]),
            Command::Put {
                key: "k".into(),
                value: Bytes::from("v"),
                condition: Condition::IfAbsent,
                lease: 0
            }
        );
        assert_eq!(
            command(&["del", "p/", "--prefix"]),
            Command::Del {
                key: "p/".into(),
                prefix: true,
                condition: Condition::Always
            }
        );
        assert_eq!(
            command(&["del", "k", "--if-match", "3"]),
            Command::Del {
                key: "k".into(),
                prefix: false,
                condition: Condition::IfMatch(3)
            }
        );
    }

    #[test]
    fn listing_and_watching() {
        assert_eq!(
            command(&["ls"]),
            Command::Ls {
                prefix: "".into(),
                limit: None,
                page_size: 1000,
                serializable: false
            }
        );
        assert_eq!(
            command(&["ls", "cfg/", "--limit", "5", "--page-size", "2"]),
            Command::Ls {
                prefix: "cfg/".into(),
                limit: Some(5),
                page_size: 2,
                serializable: false
            }
        );
        assert_eq!(
            command(&["watch", "cfg/", "--prefix", "--from-revision", "4"]),
            Command::Watch {
                key: "cfg/".into(),
                prefix: true,
                from_revision: Some(4)
            }
        );
    }

    #[test]
    fn membership_and_status() {
        assert_eq!(command(&["members"]), Command::Members);
        assert_eq!(
            command(&["member", "add", "4", "http://127.0.0.1:42379", "--learner"]),
            Command::MemberAdd {
                id: 4,
                peer_url: "http://127.0.0.1:42379".into(),
                learner: true
            }
        );
        assert_eq!(
            command(&["member", "remove", "3"]),
            Command::MemberRemove { id: 3 }
        );
        assert_eq!(
            command(&["member", "promote", "4"]),
            Command::MemberPromote { id: 4 }
        );
        assert_eq!(command(&["status"]), Command::Status { all: false });
        assert_eq!(command(&["status", "--all"]), Command::Status { all: true });
        assert_eq!(command(&["health"]), Command::Health);
    }

    #[test]
    fn leases_locks_and_elections() {
        assert_eq!(
            command(&["lease", "grant", "60"]),
            Command::LeaseGrant { ttl: 60, id: 0 }
        );
        assert_eq!(
            command(&["lease", "grant", "60", "--id", "7587"]),
            Command::LeaseGrant { ttl: 60, id: 7587 }
        );
        assert_eq!(
            command(&["lease", "revoke", "7"]),
            Command::LeaseRevoke { id: 7 }
        );
        assert_eq!(
            command(&["lease", "keep-alive", "7", "--once"]),
            Command::LeaseKeepAlive { id: 7, once: true }
        );
        assert_eq!(
            command(&["lease", "ttl", "7", "--keys"]),
            Command::LeaseTtl { id: 7, keys: true }
        );
        assert_eq!(command(&["lease", "list"]), Command::LeaseList);
        assert_eq!(command(&["compact", "9"]), Command::Compact { revision: 9 });
        assert_eq!(
            command(&["alarm", "disarm"]),
            Command::Alarms { disarm: true }
        );
        assert_eq!(
            command(&["alarm", "list"]),
            Command::Alarms { disarm: false }
        );
        assert_eq!(
            command(&["lock", "jobs"]),
            Command::Lock {
                name: "jobs".into(),
                ttl: 10,
                command: vec![]
            }
        );
        assert_eq!(
            command(&["lock", "jobs", "--ttl", "3", "--", "sh", "-c", "echo --x"]),
            Command::Lock {
                name: "jobs".into(),
                ttl: 3,
                command: vec!["sh".into(), "-c".into(), "echo --x".into()]
            }
        );
        assert_eq!(
            command(&["elect", "db", "node-1"]),
            Command::Elect {
                name: "db".into(),
                proposal: Some("node-1".into()),
                ttl: 10
            }
        );
        for observe in [&["elect", "db"][..], &["elect", "db", "--listen"]] {
            assert_eq!(
                command(observe),
                Command::Elect {
                    name: "db".into(),
                    proposal: None,
                    ttl: 10
                }
            );
        }
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["put", "k"][..],
            &["put", "k", "v", "--if-match", "1", "--if-absent"],
            &["put", "k", "v", "--if-match", "0"],
            &["put", "k", "v", "--if-match", "x"],
            &["put", "", "v"],
            &["get"],
            &["get", ""],
            &["del", "k", "--prefix", "--if-match", "2"],
            &["ls", "--limit", "0"],
            &["ls", "--page-size", "0"],
            &["watch", ""],
            &["watch", "k", "--from-revision", "-1"],
            &["member", "add", "0", "http://h:1"],
            &["member", "add", "x", "http://h:1"],
            &["member", "remove"],
            &["lease", "grant", "0"],
            &["lease", "grant"],
            &["lease", "revoke", "0"],
            &["lease", "keep-alive", "x"],
            &["put", "k", "v", "--lease", "0"],
            &["get", "k", "--rev", "x"],
            &["compact", "0"],
            &["alarm"],
            &["lock", ""],
            &["lock", "l", "--ttl", "0"],
            &["elect", "db", "p", "--listen"],
            &["frobnicate"],
            &[],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be a usage error");
        }
        // clap's own usage errors exit 2, like ours.
        let err = Cli::try_parse_from(["coordinatectl", "put", "k"]).unwrap_err();
        assert_eq!(err.exit_code(), Exit::Usage as i32);
    }
}
