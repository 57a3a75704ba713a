//! What clients did and saw: one [`Operation`] per request, with its invocation and completion
//! times on one monotonic clock and its [`Outcome`].
//!
//! Outcomes follow what a client can actually know:
//! - [`Outcome::Ok`] / [`Outcome::Read`]: the server answered success; the operation took
//!   effect at one instant between invocation and completion.
//! - [`Outcome::Fail`]: the server said it did not happen (503 on a write: "not applied").
//! - [`Outcome::Unknown`]: a timeout, a connection reset, a 504: the operation may have taken
//!   effect at any instant after its invocation — even long after the client gave up — or
//!   never.

use std::collections::BTreeMap;
use std::fmt;

/// Nanoseconds since the start of a run, all from one monotonic clock.
pub type Time = u64;

/// What a client asked for. Every operation names one key; keys are independent registers.
/// Each call has its rule in the register model (`linearizability::Register`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Set the key to this value. Values written in one history must be unique per key.
    Put(String),
    /// Read the key.
    Get,
    /// Delete the key (absent afterwards, whether or not it was there).
    Delete,
    /// Set the key to `value` (unique, as a put's) if it holds `expect` now (`None`: if it is
    /// absent); else change nothing.
    Cas {
        expect: Option<String>,
        value: String,
    },
}

impl Call {
    /// The value this call writes, if it writes one.
    pub fn written(&self) -> Option<&str> {
        match self {
            Call::Put(v) | Call::Cas { value: v, .. } => Some(v),
            Call::Get | Call::Delete => None,
        }
    }

    /// Whether this call may change the key.
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Get)
    }
}

/// How the operation ended, as far as the client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write was acknowledged (a compare-and-set: its compare held, and it wrote).
    Ok,
    /// A compare-and-set was answered: its compare did not hold, and it wrote nothing.
    CompareFailed,
    /// A read was answered: the value, or `None` if the key was absent.
    Read(Option<String>),
    /// Known not to have taken effect.
    Fail,
    /// May have taken effect at any time after invocation, or never.
    Unknown,
}

/// One request, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Position in the history (assigned by [`History::push`]).
    pub id: usize,
    /// Which client process or task issued it (operations of one client never overlap).
    pub client: usize,
    /// The node it was sent to (0 if not meaningful).
    pub node: u64,
    pub key: String,
    pub call: Call,
    /// When the request was sent.
    pub invoke: Time,
    /// When the answer arrived or the client gave up; for an unknown outcome this is only
    /// when the client stopped waiting, not a bound on when the operation took effect.
    pub complete: Time,
    pub outcome: Outcome,
    /// A short reason for a non-ok outcome ("503", "timeout", "connection reset", ...).
    pub detail: String,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{:<6} client {:<3} node {} [{} .. {}] ",
            self.id,
            self.client,
            self.node,
            secs(self.invoke),
            secs(self.complete)
        )?;
        match &self.call {
            Call::Put(v) => write!(f, "put({:?}, {v:?})", self.key)?,
            Call::Get => write!(f, "get({:?})", self.key)?,
            Call::Delete => write!(f, "delete({:?})", self.key)?,
            Call::Cas {
                expect: Some(e),
                value,
            } => write!(f, "cas({:?}, {e:?} -> {value:?})", self.key)?,
            Call::Cas {
                expect: None,
                value,
            } => write!(f, "cas({:?}, absent -> {value:?})", self.key)?,
        }
        match &self.outcome {
            Outcome::Ok => write!(f, " -> ok")?,
            Outcome::CompareFailed => write!(f, " -> compare failed")?,
            Outcome::Read(Some(v)) => write!(f, " -> {v:?}")?,
            Outcome::Read(None) => write!(f, " -> absent")?,
            Outcome::Fail => write!(f, " -> failed")?,
            Outcome::Unknown => write!(f, " -> unknown")?,
        }
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// A time as seconds with microseconds, for humans.
pub fn secs(t: Time) -> String {
    format!("{}.{:06}s", t / 1_000_000_000, (t % 1_000_000_000) / 1_000)
}

/// Counts of operations by kind and outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub writes_ok: usize,
    pub writes_failed: usize,
    pub writes_unknown: usize,
    pub reads_ok: usize,
    pub reads_failed: usize,
    pub reads_unknown: usize,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.writes_ok
            + self.writes_failed
            + self.writes_unknown
            + self.reads_ok
            + self.reads_failed
            + self.reads_unknown
    }

    pub fn ok(&self) -> usize {
        self.writes_ok + self.reads_ok
    }

    pub fn add(&mut self, other: &Summary) {
        self.writes_ok += other.writes_ok;
        self.writes_failed += other.writes_failed;
        self.writes_unknown += other.writes_unknown;
        self.reads_ok += other.reads_ok;
        self.reads_failed += other.reads_failed;
        self.reads_unknown += other.reads_unknown;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} operations: writes {} ok / {} failed / {} unknown; reads {} ok / {} failed / {} unknown",
            self.total(),
            self.writes_ok,
            self.writes_failed,
            self.writes_unknown,
            self.reads_ok,
            self.reads_failed,
            self.reads_unknown
        )
    }
}

impl Operation {
    /// The same operation with another outcome.
    pub fn with_outcome(self, outcome: Outcome) -> Operation {
        Operation { outcome, ..self }
    }
}

/// Every operation of a run, in the order they were recorded.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Appends `op`, giving it the next id; returns that id.
    pub fn push(&mut self, mut op: Operation) -> usize {
        op.id = self.ops.len();
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Records how operation `id` ended (for a history built as requests complete).
    pub fn complete(&mut self, id: usize, at: Time, outcome: Outcome, detail: &str) {
        if let Some(op) = self.ops.get_mut(id) {
            op.complete = at;
            op.outcome = outcome;
            op.detail = detail.to_string();
        }
    }

    /// Appends every operation of `ops` (their ids are reassigned).
    pub fn extend(&mut self, ops: impl IntoIterator<Item = Operation>) {
        for op in ops {
            self.push(op);
        }
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations of each key, in history order.
    pub fn by_key(&self) -> BTreeMap<&str, Vec<&Operation>> {
        let mut keys: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key.as_str()).or_default().push(op);
        }
        keys
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for op in &self.ops {
            match (&op.call, &op.outcome) {
                // A compare that did not hold was answered: it counts as a write that was
                // refused, like one that failed.
                (c, Outcome::Ok) if c.is_write() => s.writes_ok += 1,
                (c, Outcome::Fail | Outcome::CompareFailed) if c.is_write() => s.writes_failed += 1,
                (c, _) if c.is_write() => s.writes_unknown += 1,
                (_, Outcome::Read(_)) => s.reads_ok += 1,
                (_, Outcome::Fail) => s.reads_failed += 1,
                _ => s.reads_unknown += 1,
            }
        }
        s
    }

    /// One line per operation (for a history file next to the logs).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            out.push_str(&op.to_string());
            out.push('\n');
        }
        out
    }
}

/// Shorthand constructors, mostly for tests: times are in milliseconds.
pub mod build {
    use super::*;

    fn op(client: usize, key: &str, call: Call, invoke_ms: u64, complete_ms: u64) -> Operation {
        Operation {
            id: 0,
            client,
            node: 0,
            key: key.to_string(),
            call,
            invoke: invoke_ms * 1_000_000,
            complete: complete_ms * 1_000_000,
            outcome: Outcome::Unknown,
            detail: String::new(),
        }
    }

    /// An acknowledged write.
    pub fn put(
        client: usize,
        key: &str,
        value: &str,
        invoke_ms: u64,
        complete_ms: u64,
    ) -> Operation {
        Operation {
            outcome: Outcome::Ok,
            ..op(client, key, Call::Put(value.into()), invoke_ms, complete_ms)
        }
    }

    /// A write with the given outcome (`Fail` or `Unknown`).
    pub fn put_outcome(
        client: usize,
        key: &str,
        value: &str,
        invoke_ms: u64,
        complete_ms: u64,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            outcome,
            ..op(client, key, Call::Put(value.into()), invoke_ms, complete_ms)
        }
    }

    /// A read that returned `value` (`None`: absent).
    pub fn get(
        client: usize,
        key: &str,
        value: Option<&str>,
        invoke_ms: u64,
        complete_ms: u64,
    ) -> Operation {
        Operation {
            outcome: Outcome::Read(value.map(str::to_string)),
            ..op(client, key, Call::Get, invoke_ms, complete_ms)
        }
    }

    /// A read whose answer never came.
    pub fn get_unknown(client: usize, key: &str, invoke_ms: u64, complete_ms: u64) -> Operation {
        op(client, key, Call::Get, invoke_ms, complete_ms)
    }

    /// A delete with the given outcome.
    pub fn delete(
        client: usize,
        key: &str,
        invoke_ms: u64,
        complete_ms: u64,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            outcome,
            ..op(client, key, Call::Delete, invoke_ms, complete_ms)
        }
    }

    /// A compare-and-set of `key` from `expect` (`None`: absent) to `value`, with the given
    /// outcome (`Ok`: it wrote; `CompareFailed`: it did not).
    pub fn cas(
        client: usize,
        key: &str,
        (expect, value): (Option<&str>, &str),
        invoke_ms: u64,
        complete_ms: u64,
        outcome: Outcome,
    ) -> Operation {
        let call = Call::Cas {
            expect: expect.map(str::to_string),
            value: value.into(),
        };
        Operation {
            outcome,
            ..op(client, key, call, invoke_ms, complete_ms)
        }
    }

    /// A history of these operations, ids in order.
    pub fn history(ops: Vec<Operation>) -> History {
        let mut h = History::new();
        h.extend(ops);
        h
    }
}
