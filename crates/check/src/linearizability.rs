//! The linearizability checker: is there one total order of the operations that respects
//! real time (an operation that completed before another was invoked comes first) and in which
//! every key behaves like a register (a read returns the last value written, or "absent")?
//!
//! ## How
//! - **Per key** (P-compositionality, Herlihy & Wing): a history is linearizable iff each key's
//!   sub-history is, so keys are checked one at a time.
//! - **Search** (Wing & Gong, with Lowe's memoization, as in Porcupine): operations become
//!   call and return events on a doubly linked list sorted by time. Walking the list, the search
//!   tries to linearize each call it meets (the model must accept it in the current state),
//!   removes it and its return from the list, and starts again from the head; meeting a return
//!   whose call is not yet linearized means the last choice was wrong, so it backtracks. A set of
//!   (linearized operations, register state) pairs already explored prunes repeated work: two
//!   paths that linearized the same operations into the same state have the same future.
//! - **Unknown outcomes**: an unknown operation may take effect at any instant after its
//!   invocation, or never: its return event is at +infinity. For the register, two exact
//!   reductions keep the search small (values are unique per key): an unknown write nobody
//!   observed (no read returned its value, no successful compare-and-set expected it) can be
//!   left out — it changes nothing anyone saw — unless the key has a compare-and-set whose
//!   compare failed: that observes that the key did *not* hold a value, which the left-out write
//!   may be what explains, so then it stays in, at +infinity; and an unknown write somebody
//!   observed must have taken effect before that observation completed, so its return moves
//!   there. An unknown delete writes no value to be identified by, so it stays at +infinity.
//!   An unknown compare-and-set that takes effect writes only if its compare holds there.
//!   Unknown reads say nothing and are dropped; failed operations did not happen and are
//!   dropped.
//! - **Bounded**: the search counts steps and watches a deadline; out of budget, the verdict is
//!   "unknown", never a guess.
//! - **Explaining a violation**: the shortest prefix of the key's history (cut at a completion
//!   time; operations still running at the cut count as unfinished) that has no valid order is
//!   found by bisection, then operations are removed while the rest still has no valid order
//!   (a write always together with the reads that returned its value, so what is left is a real
//!   sub-history: if the whole history were linearizable, so would this part be). What remains
//!   is printed: a handful of operations that no order can explain.
//!
//! Each call is an [`Act`] with its rule in [`Register::step`]: puts, gets, deletes, and
//! compare-and-set (which etcd clients build from a transaction: compare the value, put).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::history::{secs, Call, History, Operation, Outcome, Time};

/// Limits for one [`check`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Search steps allowed for the whole history (every key together). Default 500 million.
    pub max_steps: u64,
    /// Wall-clock limit for the search. Default 5 minutes.
    pub time_limit: Duration,
    /// Wall-clock limit for shrinking a violation to a small window; when it runs out, the
    /// window found so far is reported (still a valid witness, maybe not minimal). Default 60 s.
    pub shrink_time_limit: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_steps: 500_000_000,
            time_limit: Duration::from_secs(300),
            shrink_time_limit: Duration::from_secs(60),
        }
    }
}

/// The answer.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Every key's history has a valid order.
    Linearizable,
    /// Some key's history has none; the smallest window found that shows it.
    NotLinearizable(Box<Violation>),
    /// The search ran out of budget before deciding (why).
    Unknown(String),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Operations of one key that admit no valid order.
#[derive(Clone, Debug)]
pub struct Violation {
    pub key: String,
    /// The window, sorted by invocation.
    pub window: Vec<Operation>,
    /// Facts about window operations that are not visible in the window itself.
    pub notes: Vec<String>,
    /// True if no single operation (or write with its readers) can be removed from the window
    /// without it becoming linearizable; false if shrinking stopped at its time limit.
    pub minimal: bool,
    /// The end of the shortest prefix of the key's history that has no valid order.
    pub detected_at: Time,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: no order of these {} operations is consistent with a register and with \
             real time ({}; times since the start of the run):",
            self.key,
            self.window.len(),
            if self.minimal {
                "a minimal window: without any one of them the rest is linearizable"
            } else {
                "shrinking stopped at its time limit; the window may not be minimal"
            }
        )?;
        for op in &self.window {
            writeln!(f, "  {op}")?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        write!(
            f,
            "  the key's history is linearizable up to, and not beyond, {}",
            secs(self.detected_at)
        )
    }
}

/// A verdict with what it cost.
#[derive(Clone, Debug)]
pub struct Report {
    pub verdict: Verdict,
    /// Keys checked.
    pub keys: usize,
    /// Operations the search had to place (after dropping failed and unobserved ones).
    pub ops_searched: usize,
    /// Search steps taken (not counting shrinking).
    pub steps: u64,
    pub elapsed: Duration,
}

/// Checks `history` for linearizability, key by key, against a register model.
pub fn check(history: &History, cfg: &Config) -> Report {
    let start = Instant::now();
    let mut budget = Budget::new(cfg.max_steps, start + cfg.time_limit);
    let by_key = history.by_key();
    let mut ops_searched = 0;
    let mut unknown = None;
    // Steps of earlier budgets (a fresh budget follows an exhausted key).
    let mut spent = 0;
    for (key, ops) in &by_key {
        let members: Vec<Member> = ops.iter().map(|&op| Member::whole(op)).collect();
        let kops = prepare(&members);
        ops_searched += kops.len();
        match search(&kops, &mut budget) {
            Ok(true) => {}
            Ok(false) => {
                let violation = explain(key, ops, cfg);
                return Report {
                    verdict: Verdict::NotLinearizable(Box::new(violation)),
                    keys: by_key.len(),
                    ops_searched,
                    steps: spent + budget.steps,
                    elapsed: start.elapsed(),
                };
            }
            Err(Exhausted) => {
                // Keep going: another key may still show a definite violation.
                unknown.get_or_insert_with(|| {
                    format!(
                        "search budget exhausted on key {key:?} ({} operations) after {} steps",
                        kops.len(),
                        budget.steps
                    )
                });
                spent += budget.steps;
                budget = Budget::new(cfg.max_steps.saturating_sub(spent), budget.deadline);
            }
        }
    }
    Report {
        verdict: match unknown {
            Some(why) => Verdict::Unknown(why),
            None => Verdict::Linearizable,
        },
        keys: by_key.len(),
        ops_searched,
        steps: spent + budget.steps,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------------
// The register model
// ---------------------------------------------------------------------------------------------

/// A value id: the index of the value among the key's written values.
type ValueId = u32;

/// The id of a value no operation in the (sub-)history wrote: no state ever holds it.
const NEVER_WRITTEN: ValueId = ValueId::MAX;

/// What an operation does to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Write(ValueId),
    /// Returned this value (`None`: absent).
    Read(Option<ValueId>),
    Delete,
    /// Its compare held (the key held `expect`), and it wrote.
    Cas {
        expect: Option<ValueId>,
        write: ValueId,
    },
    /// Its compare did not hold: the key did not hold `expect`.
    CasFailed {
        expect: Option<ValueId>,
    },
    /// Outcome unknown: if it took effect, it wrote only if the key held `expect`.
    MaybeCas {
        expect: Option<ValueId>,
        write: ValueId,
    },
}

/// The register: its state is the current value id, `None` while absent.
struct Register;

impl Register {
    const INIT: Option<ValueId> = None;

    fn step(state: Option<ValueId>, act: Act) -> Option<Option<ValueId>> {
        match act {
            Act::Write(v) => Some(Some(v)),
            Act::Read(r) => (r == state).then_some(state),
            Act::Delete => Some(None),
            Act::Cas { expect, write } => (state == expect).then_some(Some(write)),
            Act::CasFailed { expect } => (state != expect).then_some(state),
            Act::MaybeCas { expect, write } => {
                Some(if state == expect { Some(write) } else { state })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Preparing a key's operations for the search
// ---------------------------------------------------------------------------------------------

/// An operation of a (sub-)history; `pending` if the window was cut before it completed.
#[derive(Clone, Copy)]
struct Member<'a> {
    op: &'a Operation,
    pending: bool,
}

impl<'a> Member<'a> {
    fn whole(op: &'a Operation) -> Member<'a> {
        Member { op, pending: false }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
struct KOp {
    invoke: Time,
    /// When it completed; `Time::MAX` if it may take effect at any later time.
    ret: Time,
    act: Act,
}

/// Turns a key's members into search operations: failed operations and reads without an
/// answer are dropped; unknown writes are bounded by their first reader, or dropped if nobody
/// read them (both exact for unique values). Sorted by invocation.
fn prepare(members: &[Member]) -> Vec<KOp> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        /// A put or a compare-and-set that wrote (or, unknown, may have).
        Write {
            known: bool,
        },
        Delete {
            known: bool,
        },
        Read,
        CasFailed,
    }
    // (member, kind) of every operation that may have happened.
    let mut live: Vec<(&Member, Kind)> = Vec::new();
    for m in members {
        let done = !m.pending;
        let kind = match (&m.op.call, &m.op.outcome) {
            (_, Outcome::Fail) => continue,
            (Call::Get, Outcome::Read(_)) if done => Kind::Read,
            (Call::Get, _) => continue,
            (Call::Cas { .. }, Outcome::CompareFailed) if done => Kind::CasFailed,
            (Call::Delete, Outcome::Ok) => Kind::Delete { known: done },
            (Call::Delete, _) => Kind::Delete { known: false },
            (_, Outcome::Ok) => Kind::Write { known: done },
            _ => Kind::Write { known: false },
        };
        live.push((m, kind));
    }
    let mut ids: HashMap<&str, ValueId> = HashMap::new();
    let mut writers: Vec<usize> = Vec::new();
    for (m, kind) in &live {
        if let (Some(v), Kind::Write { .. }) = (m.op.call.written(), kind) {
            let next = ids.len() as ValueId;
            let id = *ids.entry(v).or_insert(next);
            if id as usize == writers.len() {
                writers.push(0);
            }
            writers[id as usize] += 1;
        }
    }
    let id_of = |v: &Option<String>| -> Option<ValueId> {
        v.as_ref()
            .map(|v| ids.get(v.as_str()).copied().unwrap_or(NEVER_WRITTEN))
    };
    // What each operation saw the key hold, if it saw a value: a read, and a compare-and-set
    // whose compare held.
    let observed = |m: &Member, kind: Kind| -> Option<Option<ValueId>> {
        match (kind, &m.op.call, &m.op.outcome) {
            (Kind::Read, _, Outcome::Read(v)) => Some(id_of(v)),
            (Kind::Write { known: true }, Call::Cas { expect, .. }, _) => Some(id_of(expect)),
            _ => None,
        }
    };
    // The earliest completion of an observation of each value.
    let mut first_seen_done: HashMap<ValueId, Time> = HashMap::new();
    for (m, kind) in &live {
        if let Some(Some(id)) = observed(m, *kind) {
            let t = first_seen_done.entry(id).or_insert(Time::MAX);
            *t = (*t).min(m.op.complete);
        }
    }
    // A failed compare observes what the key did not hold: then no write may be left out.
    let keep_unseen = live.iter().any(|(_, k)| *k == Kind::CasFailed);
    let mut kops = Vec::with_capacity(live.len());
    for (m, kind) in &live {
        let invoke = m.op.invoke;
        let done = m.op.complete.max(invoke);
        let (ret, act) = match (kind, &m.op.call) {
            (Kind::Write { known }, call) => {
                let Some(v) = call.written() else { continue };
                let id = ids[v];
                let ret = if *known {
                    done
                } else if writers[id as usize] > 1 {
                    Time::MAX
                } else {
                    match first_seen_done.get(&id) {
                        Some(&t) => t.max(invoke),
                        None if keep_unseen => Time::MAX,
                        None => continue,
                    }
                };
                let act = match call {
                    Call::Cas { expect, .. } if *known => Act::Cas {
                        expect: id_of(expect),
                        write: id,
                    },
                    Call::Cas { expect, .. } => Act::MaybeCas {
                        expect: id_of(expect),
                        write: id,
                    },
                    _ => Act::Write(id),
                };
                (ret, act)
            }
            (Kind::Delete { known: true }, _) => (done, Act::Delete),
            (Kind::Delete { known: false }, _) => (Time::MAX, Act::Delete),
            (Kind::CasFailed, Call::Cas { expect, .. }) => (
                done,
                Act::CasFailed {
                    expect: id_of(expect),
                },
            ),
            (Kind::Read, _) => match observed(m, *kind) {
                Some(seen) => (done, Act::Read(seen)),
                None => continue,
            },
            _ => continue,
        };
        kops.push(KOp { invoke, ret, act });
    }
    kops.sort_by_key(|k| k.invoke);
    kops
}

// ---------------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------------

/// The search ran out of steps or time.
#[derive(Debug)]
struct Exhausted;

struct Budget {
    steps: u64,
    max_steps: u64,
    deadline: Instant,
}

impl Budget {
    fn new(max_steps: u64, deadline: Instant) -> Budget {
        Budget {
            steps: 0,
            max_steps,
            deadline,
        }
    }

    fn spend(&mut self) -> Result<(), Exhausted> {
        self.steps += 1;
        if self.steps > self.max_steps
            || (self.steps.is_multiple_of(4096) && Instant::now() >= self.deadline)
        {
            return Err(Exhausted);
        }
        Ok(())
    }
}

const NIL: usize = usize::MAX;

/// A memo entry: the linearized set (as the words between the first not-full word and the
/// last non-empty one: the set is mostly a prefix in invocation order) and the state.
#[derive(Hash, PartialEq, Eq)]
struct Explored {
    first_word: u32,
    words: Box<[u64]>,
    state: Option<ValueId>,
}

fn explored(bits: &[u64], state: Option<ValueId>) -> Explored {
    let first = bits
        .iter()
        .position(|&w| w != u64::MAX)
        .unwrap_or(bits.len());
    let last = bits
        .iter()
        .rposition(|&w| w != 0)
        .map_or(0, |i| i + 1)
        .max(first);
    Explored {
        first_word: first as u32,
        words: bits[first..last].into(),
        state,
    }
}

/// Whether `ops` (one key) can be linearized.
fn search(ops: &[KOp], budget: &mut Budget) -> Result<bool, Exhausted> {
    let n = ops.len();
    if n == 0 {
        return Ok(true);
    }
    // Events: (time, is_return, op). At equal times calls come first, so operations that
    // touch at an instant count as concurrent (never a false violation).
    let mut events: Vec<(Time, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        events.push((op.ret, true, i));
    }
    events.sort();
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut return_of = vec![NIL; n];
    let mut is_call = vec![false; 2 * n];
    let mut op_of = vec![0usize; 2 * n];
    let mut last = head;
    for (e, &(_, is_return, op)) in events.iter().enumerate() {
        next[last] = e;
        prev[e] = last;
        last = e;
        is_call[e] = !is_return;
        op_of[e] = op;
        if is_return {
            return_of[op] = e;
        }
    }
    let mut call_of = vec![NIL; n];
    for e in 0..2 * n {
        if is_call[e] {
            call_of[op_of[e]] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = next[e];
        if next[e] != NIL {
            prev[next[e]] = prev[e];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = e;
        if next[e] != NIL {
            prev[next[e]] = e;
        }
    };

    let mut bits = vec![0u64; n.div_ceil(64)];
    let mut seen: HashSet<Explored> = HashSet::new();
    let mut stack: Vec<(usize, Option<ValueId>)> = Vec::new();
    let mut state = Register::INIT;
    let mut entry = next[head];
    while next[head] != NIL {
        budget.spend()?;
        if is_call[entry] {
            let op = op_of[entry];
            if let Some(new_state) = Register::step(state, ops[op].act) {
                bits[op / 64] |= 1 << (op % 64);
                if seen.insert(explored(&bits, new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_of[op]);
                    entry = next[head];
                    continue;
                }
                bits[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // The return of an operation not yet linearized: undo the last choice.
            let Some((call, old_state)) = stack.pop() else {
                return Ok(false);
            };
            let op = op_of[call];
            state = old_state;
            bits[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, return_of[op]);
            relink(&mut next, &mut prev, call_of[op]);
            entry = next[call];
        }
    }
    Ok(true)
}

/// Whether `members` has no valid order (false also when the budget runs out).
fn violates(members: &[Member], budget: &mut Budget) -> bool {
    matches!(search(&prepare(members), budget), Ok(false))
}

// ---------------------------------------------------------------------------------------------
// Explaining a violation
// ---------------------------------------------------------------------------------------------

/// Shrinks a key's non-linearizable history to a small window and describes it.
fn explain(key: &str, ops: &[&Operation], cfg: &Config) -> Violation {
    let deadline = Instant::now() + cfg.shrink_time_limit;
    let (detected_at, mut members) = shortest_violating_prefix(ops, deadline);
    members.retain(|m| match (&m.op.call, &m.op.outcome) {
        (_, Outcome::Fail) => false,
        (Call::Get, Outcome::Read(_)) => !m.pending,
        (Call::Get, _) => false,
        _ => true,
    });
    let (members, minimal) = shrink(members, deadline);
    let window: Vec<Operation> = members.iter().map(|m| m.op.clone()).collect();
    let notes = notes(&window, ops);
    Violation {
        key: key.to_string(),
        window,
        notes,
        minimal,
        detected_at,
    }
}

/// Step 1 of [`explain`]: the shortest prefix of `ops`, cut at a completion time, that has no
/// valid order (operations still running at the cut are pending), and when it completed; the
/// whole history if no shorter prefix is found.
fn shortest_violating_prefix<'a>(
    ops: &[&'a Operation],
    deadline: Instant,
) -> (Time, Vec<Member<'a>>) {
    let budget = || Budget::new(u64::MAX, deadline);
    let prefix = |t: Time| -> Vec<Member<'a>> {
        ops.iter()
            .filter(|op| op.invoke <= t)
            .map(|&op| Member {
                op,
                pending: op.complete > t,
            })
            .collect()
    };
    let mut cuts: Vec<Time> = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok | Outcome::Read(_)))
        .map(|op| op.complete)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut detected_at = ops.iter().map(|op| op.complete).max().unwrap_or(0);
    let mut members: Vec<Member<'a>> = ops.iter().map(|&op| Member::whole(op)).collect();
    if let Some(&last) = cuts.last() {
        if violates(&prefix(last), &mut budget()) {
            // Invariant: the prefix at cuts[hi] violates.
            let (mut lo, mut hi) = (0, cuts.len() - 1);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if violates(&prefix(cuts[mid]), &mut budget()) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            detected_at = cuts[hi];
            members = prefix(cuts[hi]);
        }
    }
    (detected_at, members)
}

/// Step 2 of [`explain`]: removes operations while the rest still has no valid order;
/// returns what is left and whether it is minimal (false if the deadline cut the search).
fn shrink<'a>(mut members: Vec<Member<'a>>, deadline: Instant) -> (Vec<Member<'a>>, bool) {
    let budget = || Budget::new(u64::MAX, deadline);
    // Remove operations while the rest still has no valid order, keeping it a real
    //    sub-history (one that a linearizable history's removals could leave). Removing a
    //    write also removes everything that observed its value (reads of it, compare-and-sets
    //    that expected it and wrote); removing a delete, everything that observed absence;
    //    removing either, every failed compare (it observed what the key did *not* hold,
    //    which the removed operation may be what explains). A read may go alone.
    members.sort_by_key(|m| (m.op.invoke, m.op.id));
    let written: HashSet<&str> = members.iter().filter_map(|m| m.op.call.written()).collect();
    let deletes = |set: &[Member]| set.iter().filter(|m| m.op.call == Call::Delete).count();
    let all_deletes = deletes(&members);
    let close = |set: Vec<Member<'a>>| -> Vec<Member<'a>> {
        let present: HashSet<&str> = set.iter().filter_map(|m| m.op.call.written()).collect();
        let lost_delete = deletes(&set) < all_deletes;
        let lost_write = present.len() < written.len();
        set.into_iter()
            .filter(|m| match (seen_value(m.op), &m.op.call, &m.op.outcome) {
                (_, Call::Cas { .. }, Outcome::CompareFailed) => !lost_write && !lost_delete,
                (Some(v), _, _) => !written.contains(v) || present.contains(v),
                (None, Call::Get, Outcome::Read(None))
                | (None, Call::Cas { expect: None, .. }, Outcome::Ok) => !lost_delete,
                _ => true,
            })
            .collect()
    };
    let mut minimal = true;
    let mut chunk = members.len().div_ceil(2).max(1);
    'shrink: loop {
        let mut progress = false;
        let mut i = 0;
        while i < members.len() && members.len() > 1 {
            if Instant::now() >= deadline {
                minimal = false;
                break 'shrink;
            }
            let end = (i + chunk).min(members.len());
            let mut candidate = members.clone();
            candidate.drain(i..end);
            let candidate = close(candidate);
            if !candidate.is_empty() && violates(&candidate, &mut budget()) {
                members = candidate;
                progress = true;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 && !progress || members.len() <= 1 {
            break;
        }
        if !progress {
            chunk = chunk.div_ceil(2).max(1);
        }
    }
    (members, minimal)
}

/// The value an operation saw the key hold: a read's, or a successful compare-and-set's.
fn seen_value(op: &Operation) -> Option<&str> {
    match (&op.call, &op.outcome) {
        (_, Outcome::Read(Some(v))) => Some(v),
        (
            Call::Cas {
                expect: Some(e), ..
            },
            Outcome::Ok,
        ) => Some(e),
        _ => None,
    }
}

/// What the window does not show: where a read's value came from, and what an unknown write
/// is known to have done.
fn notes(window: &[Operation], all: &[&Operation]) -> Vec<String> {
    let mut notes = Vec::new();
    for op in window {
        match (&op.call, &op.outcome) {
            (Call::Get, Outcome::Read(Some(v))) => {
                let writes: Vec<&&Operation> = all
                    .iter()
                    .filter(|w| w.call.written() == Some(v.as_str()))
                    .collect();
                let in_window = window.iter().any(|w| w.call.written() == Some(v.as_str()));
                let show = |w: &Operation| match (&w.outcome, w.detail.is_empty()) {
                    (Outcome::CompareFailed, _) => format!("#{} (its compare failed)", w.id),
                    (Outcome::Fail, true) => format!("#{} (failed)", w.id),
                    (Outcome::Fail, false) => format!("#{} (failed: {})", w.id, w.detail),
                    _ => format!("#{} (invoked at {})", w.id, secs(w.invoke)),
                };
                if writes.is_empty() {
                    notes.push(format!(
                        "#{} read {v:?}, a value no client ever wrote to this key",
                        op.id
                    ));
                } else if !in_window {
                    let all_failed = writes
                        .iter()
                        .all(|w| matches!(w.outcome, Outcome::Fail | Outcome::CompareFailed));
                    let list: Vec<String> = writes.iter().map(|w| show(w)).collect();
                    notes.push(if all_failed {
                        format!(
                            "#{} read {v:?}, written only by {}: a write that did not happen",
                            op.id,
                            list.join(", ")
                        )
                    } else {
                        format!(
                            "#{} read {v:?}, written only by {}, which had not yet been \
                             invoked when this read completed (or failed)",
                            op.id,
                            list.join(", ")
                        )
                    });
                }
            }
            (Call::Put(v) | Call::Cas { value: v, .. }, Outcome::Unknown) => {
                let first_read = all
                    .iter()
                    .filter(|r| matches!(&r.outcome, Outcome::Read(Some(x)) if x == v))
                    .min_by_key(|r| r.complete);
                notes.push(match first_read {
                    Some(r) => format!(
                        "#{}: outcome unknown, but #{} read its value, so it took effect \
                         between {} and {}",
                        op.id,
                        r.id,
                        secs(op.invoke),
                        secs(r.complete.max(op.invoke))
                    ),
                    None => format!(
                        "#{}: outcome unknown; it may take effect at any time after {}",
                        op.id,
                        secs(op.invoke)
                    ),
                });
            }
            _ => {}
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::super::history::build::*;
    use super::*;

    fn verdict(ops: Vec<Operation>) -> Verdict {
        check(&history(ops), &Config::default()).verdict
    }

    fn assert_ok(ops: Vec<Operation>) {
        match verdict(ops) {
            Verdict::Linearizable => {}
            other => panic!("want linearizable, got {other:?}"),
        }
    }

    /// Asserts a violation and returns it.
    fn assert_violation(ops: Vec<Operation>) -> Violation {
        match verdict(ops) {
            Verdict::NotLinearizable(v) => {
                println!("{v}");
                *v
            }
            other => panic!("want a violation, got {other:?}"),
        }
    }

    /// The window's operation ids.
    fn ids(v: &Violation) -> Vec<usize> {
        v.window.iter().map(|op| op.id).collect()
    }

    // ----- known-good histories -----

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_ok(vec![]);
        assert_ok(vec![
            get(0, "k", None, 0, 1),
            put(0, "k", "a", 2, 3),
            get(0, "k", Some("a"), 4, 5),
            put(1, "k", "b", 6, 7),
            get(1, "k", Some("b"), 8, 9),
        ]);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        // put b overlaps both reads: the first sees b, the second too; or each sees a.
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 10),
            get(2, "k", Some("b"), 3, 4),
            get(2, "k", Some("b"), 5, 6),
        ]);
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 10),
            get(2, "k", Some("a"), 3, 4),
            get(2, "k", Some("b"), 5, 6),
        ]);
        // Concurrent writes may land in either order: the later read decides which.
        assert_ok(vec![
            put(0, "k", "a", 0, 5),
            put(1, "k", "b", 1, 4),
            get(2, "k", Some("a"), 6, 7),
        ]);
        assert_ok(vec![
            put(0, "k", "a", 0, 5),
            put(1, "k", "b", 1, 4),
            get(2, "k", Some("b"), 6, 7),
        ]);
    }

    #[test]
    fn operations_that_touch_at_an_instant_count_as_concurrent() {
        // The read is invoked at the instant the write completes: it may still see "absent".
        assert_ok(vec![put(0, "k", "a", 0, 5), get(1, "k", None, 5, 6)]);
    }

    #[test]
    fn an_unknown_write_may_take_effect_long_after_the_client_gave_up() {
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            put_outcome(1, "k", "b", 2, 3, Outcome::Unknown),
            get(2, "k", Some("a"), 4, 5),
            get(2, "k", Some("a"), 6, 7),
            get(2, "k", Some("b"), 100, 101),
            get(2, "k", Some("b"), 102, 103),
        ]);
    }

    #[test]
    fn an_unknown_write_may_never_take_effect() {
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            put_outcome(1, "k", "b", 2, 3, Outcome::Unknown),
            get(2, "k", Some("a"), 4, 5),
            get(2, "k", Some("a"), 100, 101),
        ]);
    }

    #[test]
    fn failed_writes_and_unanswered_reads_are_ignored() {
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            put_outcome(1, "k", "b", 2, 3, Outcome::Fail),
            get_unknown(2, "k", 4, 5),
            get(2, "k", Some("a"), 6, 7),
        ]);
    }

    #[test]
    fn keys_are_independent_registers() {
        assert_ok(vec![
            put(0, "x", "1", 0, 1),
            put(0, "y", "2", 2, 3),
            get(1, "x", Some("1"), 4, 5),
            get(1, "y", Some("2"), 4, 5),
            get(1, "z", None, 4, 5),
        ]);
    }

    /// A pseudo-random source for the simulations (xorshift).
    struct Sim(u64);

    impl Sim {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The history of a simulated register: each operation takes effect at a random instant
    /// inside its interval; an unknown write takes effect in it, long after, or never. With
    /// `rich`, deletes and compare-and-sets (known and unknown) are mixed in.
    fn simulate(
        sim: &mut Sim,
        tag: u64,
        clients: usize,
        per_client: usize,
        rich: bool,
    ) -> Vec<Operation> {
        struct Planned {
            op: Operation,
            effect: Option<u64>,
        }
        let mut planned = Vec::new();
        for client in 0..clients {
            let mut t = sim.below(5);
            for i in 0..per_client {
                let invoke = t;
                let complete = invoke + 1 + sim.below(8);
                let effect_at = invoke * 10 + 1 + sim.below((complete - invoke) * 10 - 1);
                let value = format!("{tag}-{client}-{i}");
                // A compare-and-set expects absent or a value this client wrote earlier.
                let expect = match sim.below(i as u64 + 1) {
                    0 => None,
                    j => Some(format!("{tag}-{client}-{}", j - 1)),
                };
                let kind = if rich { sim.below(14) } else { sim.below(10) };
                let unknown_effect = |sim: &mut Sim| match sim.below(3) {
                    0 => None,
                    1 => Some(effect_at),
                    _ => Some(effect_at + sim.below(400)),
                };
                let (op, effect) = match kind {
                    0..=3 => (put(client, "k", &value, invoke, complete), Some(effect_at)),
                    4 => (
                        put_outcome(client, "k", &value, invoke, complete, Outcome::Unknown),
                        match sim.below(3) {
                            0 => None,
                            1 => Some(effect_at),
                            _ => Some(effect_at + sim.below(400)),
                        },
                    ),
                    5 => (
                        put_outcome(client, "k", &value, invoke, complete, Outcome::Fail),
                        None,
                    ),
                    10 => (
                        delete(client, "k", invoke, complete, Outcome::Ok),
                        Some(effect_at),
                    ),
                    11 => (
                        delete(client, "k", invoke, complete, Outcome::Unknown),
                        unknown_effect(sim),
                    ),
                    // The outcome is decided when it takes effect.
                    12 => (
                        cas(
                            client,
                            "k",
                            (expect.as_deref(), &value),
                            invoke,
                            complete,
                            Outcome::Ok,
                        ),
                        Some(effect_at),
                    ),
                    13 => (
                        cas(
                            client,
                            "k",
                            (expect.as_deref(), &value),
                            invoke,
                            complete,
                            Outcome::Unknown,
                        ),
                        unknown_effect(sim),
                    ),
                    _ => (get(client, "k", None, invoke, complete), Some(effect_at)),
                };
                planned.push(Planned { op, effect });
                t = complete + sim.below(3);
            }
        }
        let mut order: Vec<usize> = (0..planned.len())
            .filter(|&i| planned[i].effect.is_some())
            .collect();
        order.sort_by_key(|&i| planned[i].effect);
        let mut value: Option<String> = None;
        for i in order {
            let op = &mut planned[i].op;
            match op.call.clone() {
                Call::Put(v) => value = Some(v),
                Call::Get => op.outcome = Outcome::Read(value.clone()),
                Call::Delete => value = None,
                Call::Cas { expect, value: v } => {
                    let holds = expect == value;
                    if holds {
                        value = Some(v);
                    }
                    if op.outcome == Outcome::Ok && !holds {
                        op.outcome = Outcome::CompareFailed;
                    }
                }
            }
        }
        planned.into_iter().map(|p| p.op).collect()
    }

    /// `rounds` random histories of a real register, 4 clients of `per_client` operations
    /// (`rich`: with deletes and compare-and-sets), must all be judged linearizable.
    fn assert_real_registers_pass(seed: u64, rounds: u64, per_client: usize, rich: bool) {
        let mut sim = Sim(seed);
        for round in 0..rounds {
            let ops = simulate(&mut sim, round, 4, per_client, rich);
            match verdict(ops.clone()) {
                Verdict::Linearizable => {}
                other => panic!(
                    "round {round}: a real register's history was judged {other:?}:\n{}",
                    history(ops).to_text()
                ),
            }
        }
    }

    #[test]
    fn random_histories_of_a_real_register_are_linearizable() {
        assert_real_registers_pass(0x9e37_79b9_7f4a_7c15, 200, 12, false);
    }

    #[test]
    fn random_histories_with_deletes_and_compare_and_set_are_linearizable() {
        assert_real_registers_pass(0x5851_f42d_4c95_7f2d, 300, 10, true);
    }

    #[test]
    fn a_long_history_of_a_real_register_is_linearizable() {
        let ops = simulate(&mut Sim(42), 0, 6, 1000, false);
        let report = check(&history(ops), &Config::default());
        assert!(report.verdict.is_linearizable(), "{:?}", report.verdict);
    }

    /// Makes one read of a simulated history stale (it returns the value of an acknowledged
    /// write that another acknowledged write overwrote before the read began), if it can.
    fn make_a_read_stale(ops: &mut [Operation]) -> bool {
        let acked: Vec<(String, Time, Time)> = ops
            .iter()
            .filter_map(|o| match (&o.call, &o.outcome) {
                (Call::Put(v), Outcome::Ok) => Some((v.clone(), o.invoke, o.complete)),
                _ => None,
            })
            .collect();
        for read in ops.iter_mut() {
            let Outcome::Read(seen) = &read.outcome else {
                continue;
            };
            let stale = acked.iter().find_map(|(_, new_invoke, new_done)| {
                if *new_done >= read.invoke {
                    return None;
                }
                acked
                    .iter()
                    .find(|(v, _, old_done)| old_done < new_invoke && Some(v) != seen.as_ref())
            });
            if let Some((v, _, _)) = stale {
                read.outcome = Outcome::Read(Some(v.clone()));
                return true;
            }
        }
        false
    }

    #[test]
    fn a_stale_read_planted_in_a_random_history_is_always_caught() {
        let mut sim = Sim(7);
        let mut planted = 0;
        for round in 0..100 {
            let mut ops = simulate(&mut sim, round, 4, 12, false);
            if !make_a_read_stale(&mut ops) {
                continue;
            }
            planted += 1;
            match verdict(ops.clone()) {
                Verdict::NotLinearizable(v) => assert!(v.minimal, "{v}"),
                other => panic!(
                    "round {round}: a planted stale read was judged {other:?}:\n{}",
                    history(ops).to_text()
                ),
            }
        }
        assert!(
            planted > 50,
            "only {planted} histories had a read to make stale"
        );
    }

    // ----- known-bad histories -----

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let v = assert_violation(vec![
            put(0, "k", "a", 0, 1),
            get(1, "k", Some("a"), 2, 3),
            put(0, "k", "b", 4, 5),
            get(1, "k", Some("b"), 6, 7),
            put(2, "other", "x", 6, 7),
            get(1, "k", Some("a"), 8, 9), // stale: b was acknowledged before this began
            get(1, "k", Some("b"), 10, 11),
        ]);
        assert_eq!(v.key, "k");
        assert!(v.minimal);
        // put a (with its reads), put b, and the stale read: b must come after a.
        assert!(ids(&v).contains(&2) && ids(&v).contains(&5), "{v}");
        assert!(v.window.len() <= 4, "{v}");
    }

    #[test]
    fn a_lost_acknowledged_write_read_as_the_older_value_is_caught() {
        let v = assert_violation(vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 3),
            get(2, "k", Some("a"), 50, 51),
        ]);
        assert_eq!(ids(&v), vec![0, 1, 2]);
    }

    #[test]
    fn a_lost_acknowledged_write_read_as_absent_is_caught() {
        let v = assert_violation(vec![put(0, "k", "a", 0, 1), get(2, "k", None, 50, 51)]);
        assert_eq!(ids(&v), vec![0, 1]);
    }

    #[test]
    fn a_read_of_a_never_written_value_is_caught() {
        let v = assert_violation(vec![
            put(0, "k", "a", 0, 1),
            get(1, "k", Some("a"), 2, 3),
            get(1, "k", Some("zzz"), 4, 5),
        ]);
        assert_eq!(ids(&v), vec![2]);
        assert!(v.notes[0].contains("no client ever wrote"), "{v}");
    }

    #[test]
    fn a_read_of_a_failed_write_is_caught() {
        let v = assert_violation(vec![
            put_outcome(0, "k", "a", 0, 1, Outcome::Fail),
            get(1, "k", Some("a"), 2, 3),
        ]);
        assert_eq!(ids(&v), vec![1]);
        assert!(v.notes[0].contains("did not happen"), "{v}");
    }

    #[test]
    fn a_read_of_a_value_before_it_was_written_is_caught() {
        let v = assert_violation(vec![
            get(1, "k", Some("a"), 0, 1),
            put_outcome(0, "k", "a", 2, 3, Outcome::Unknown),
        ]);
        assert_eq!(ids(&v), vec![0]);
        assert!(v.notes[0].contains("not yet been invoked"), "{v}");
    }

    #[test]
    fn reads_going_back_in_time_are_caught() {
        // Two concurrent writes; one reader sees b then a: each read alone is fine, together
        // they need both orders of the writes.
        let v = assert_violation(vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 0, 10),
            get(2, "k", Some("b"), 11, 12),
            get(2, "k", Some("a"), 13, 14),
        ]);
        assert_eq!(ids(&v), vec![0, 1, 2, 3]);
        // New value, then old value, during one slow write.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 20),
            get(2, "k", Some("b"), 3, 4),
            get(3, "k", Some("a"), 5, 6),
        ]);
    }

    #[test]
    fn an_unknown_write_seen_then_unseen_is_caught() {
        // Once a read saw b, b took effect; reading a later means going back in time.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            put_outcome(1, "k", "b", 2, 3, Outcome::Unknown),
            get(2, "k", Some("b"), 10, 11),
            get(2, "k", Some("a"), 12, 13),
        ]);
    }

    #[test]
    fn the_window_is_small_in_a_long_history() {
        let mut ops = Vec::new();
        let mut t = 0;
        for i in 0..500 {
            let c = i % 3;
            ops.push(put(c, "k", &format!("v{i}"), t, t + 3));
            ops.push(get(c + 3, "k", Some(&format!("v{i}")), t + 4, t + 6));
            t += 7;
        }
        // Stale: v10 long after v499 was acknowledged.
        ops.push(get(9, "k", Some("v10"), t + 10, t + 11));
        let v = assert_violation(ops);
        assert!(v.minimal);
        assert!(v.window.len() <= 5, "{v}");
        assert_eq!(v.detected_at, (t + 11) * 1_000_000);
    }

    #[test]
    fn one_bad_key_is_reported_among_good_ones() {
        let v = assert_violation(vec![
            put(0, "a", "1", 0, 1),
            put(0, "b", "2", 0, 1),
            get(1, "a", Some("1"), 2, 3),
            get(1, "b", None, 2, 3),
        ]);
        assert_eq!(v.key, "b");
    }

    #[test]
    fn an_exhausted_budget_says_unknown() {
        let mut ops = Vec::new();
        for i in 0..200 {
            ops.push(put(i, "k", &format!("v{i}"), 0, 100));
        }
        ops.push(get(999, "k", Some("v7"), 101, 102));
        let cfg = Config {
            max_steps: 10,
            ..Config::default()
        };
        match check(&history(ops), &cfg).verdict {
            Verdict::Unknown(why) => assert!(why.contains("budget"), "{why}"),
            other => panic!("want unknown, got {other:?}"),
        }
    }

    // ---- deletes and compare-and-set ----

    #[test]
    fn a_delete_makes_the_key_absent() {
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            delete(0, "k", 2, 3, Outcome::Ok),
            get(1, "k", None, 4, 5),
        ]);
        let v = assert_violation(vec![
            put(0, "k", "a", 0, 1),
            delete(0, "k", 2, 3, Outcome::Ok),
            get(1, "k", Some("a"), 4, 5),
        ]);
        assert_eq!(v.window.len(), 3, "{v}");
    }

    #[test]
    fn an_unknown_delete_may_have_happened_or_not() {
        for seen in [None, Some("a")] {
            assert_ok(vec![
                put(0, "k", "a", 0, 1),
                delete(0, "k", 2, 3, Outcome::Unknown),
                get(1, "k", seen, 4, 5),
            ]);
        }
        // But not in between: absent, then the value back without a write.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            delete(0, "k", 2, 3, Outcome::Unknown),
            get(1, "k", None, 4, 5),
            get(1, "k", Some("a"), 6, 7),
        ]);
    }

    #[test]
    fn a_compare_and_set_writes_only_over_what_it_expects() {
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (Some("a"), "b"), 2, 3, Outcome::Ok),
            get(1, "k", Some("b"), 4, 5),
        ]);
        // It wrote over a value the key no longer held.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            put(0, "k", "b", 2, 3),
            cas(0, "k", (Some("a"), "c"), 4, 5, Outcome::Ok),
        ]);
        // It created a key that existed.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (None, "c"), 2, 3, Outcome::Ok),
        ]);
        // Its write was lost.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (Some("a"), "b"), 2, 3, Outcome::Ok),
            get(1, "k", Some("a"), 4, 5),
        ]);
    }

    #[test]
    fn a_failed_compare_observes_that_the_key_held_something_else() {
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (None, "b"), 2, 3, Outcome::CompareFailed),
            get(1, "k", Some("a"), 4, 5),
        ]);
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (Some("a"), "b"), 2, 3, Outcome::CompareFailed),
        ]);
        // An unknown write nobody read explains a failed compare: it must not be left out.
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 3).with_outcome(Outcome::Unknown),
            cas(0, "k", (Some("a"), "c"), 4, 5, Outcome::CompareFailed),
        ]);
    }

    #[test]
    fn an_unknown_compare_and_set_writes_if_its_compare_held() {
        // It took effect (its value was read), over the value it expected.
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (Some("a"), "b"), 2, 3, Outcome::Unknown),
            get(1, "k", Some("b"), 4, 5),
        ]);
        // Its value read, though its compare could never hold.
        assert_violation(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (Some("x"), "b"), 2, 3, Outcome::Unknown),
            get(1, "k", Some("b"), 4, 5),
        ]);
        // Left at the end, where its compare does not hold: it wrote nothing, which is fine.
        assert_ok(vec![
            put(0, "k", "a", 0, 1),
            cas(0, "k", (Some("x"), "b"), 2, 3, Outcome::Unknown),
            cas(1, "k", (Some("z"), "c"), 4, 5, Outcome::CompareFailed),
        ]);
    }

    #[test]
    fn a_compare_and_set_answered_failed_and_then_applied_is_caught() {
        // What a proposal stepped twice does: the first copy's compare fails (and is what the
        // client hears), the second copy's holds, after a delete, and writes.
        let v = assert_violation(vec![
            put(0, "k", "a", 0, 1),
            cas(1, "k", (None, "b"), 2, 3, Outcome::CompareFailed),
            delete(0, "k", 2, 5, Outcome::Ok),
            get(2, "k", Some("b"), 6, 7),
        ]);
        let text = v.to_string();
        assert!(text.contains("its compare failed"), "{text}");
    }
}
