//! A model of the store — every revision's state as a plain map, built by replaying the
//! commands — a random command generator over a few keys, and the test that a read at every
//! revision from the compaction point to the current one equals the model.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::kv::{
    Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange, Event, KeyRange, KeyValue, Kv,
    LeaseId, Outcome, Put, RangeQuery, Refusal, Txn, TxnOp,
};

/// A small deterministic generator (xorshift), so a failure names its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// True once in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The keys the generator writes: nested, with 0xff bytes (prefix ends), out of UTF-8.
pub const KEYS: [&[u8]; 6] = [b"a", b"a/1", b"a\xff", b"b", b"\xff", b"\xff\x01"];
/// Leases the generator grants, revokes and attaches (3 is never granted).
const LEASES: [LeaseId; 3] = [1, 2, 3];

fn key(rng: &mut Rng) -> Bytes {
    Bytes::from_static(KEYS[rng.below(KEYS.len() as u64) as usize])
}

/// A range of any shape over the keys, including empty and inverted ones.
pub fn range(rng: &mut Rng) -> KeyRange {
    let prefixes: [&[u8]; 5] = [b"", b"a", b"a\xff", b"\xff", b"c"];
    match rng.below(4) {
        0 => KeyRange::Key(key(rng)),
        1 => KeyRange::Prefix(Bytes::from_static(prefixes[rng.below(5) as usize])),
        2 => KeyRange::FromKey(key(rng)),
        _ => KeyRange::Between(key(rng), key(rng)),
    }
}

fn random_put(rng: &mut Rng, n: u64) -> Put {
    let mut p = Put::new(key(rng), Bytes::from(format!("v{n}")));
    match rng.below(8) {
        0 => p.ignore_value = true,
        1 => p.ignore_lease = true,
        2..=4 => p.lease = *rng.pick(&LEASES),
        _ => {}
    }
    p
}

fn random_op(rng: &mut Rng, n: u64) -> TxnOp {
    match rng.below(3) {
        0 => TxnOp::Delete(DeleteRange {
            range: range(rng),
            prev_kv: rng.one_in(2),
        }),
        _ => TxnOp::Put(random_put(rng, n)),
    }
}

fn random_txn(rng: &mut Rng, n: u64, model: &Model) -> Txn {
    let k = key(rng);
    // Mostly the key's true version, so both branches run.
    let version = match rng.one_in(3) {
        true => rng.below(3),
        false => model.now().get(&k).map_or(0, |kv| kv.version),
    };
    let mut ops = |max| {
        (0..rng.below(max))
            .map(|_| random_op(rng, n))
            .collect::<Vec<_>>()
    };
    let success = ops(5);
    let failure = ops(3);
    Txn {
        compares: vec![Compare {
            range: KeyRange::Key(k),
            op: CompareOp::Equal,
            target: CompareTarget::Version(version),
        }],
        success,
        failure,
    }
}

/// A random command the model understands; `n` makes values distinct.
pub fn command(rng: &mut Rng, n: u64, model: &Model) -> Command {
    match rng.below(20) {
        0..=6 => Command::Put(random_put(rng, n)),
        7..=8 => Command::Delete(Delete {
            key: key(rng),
            condition: None,
        }),
        9..=10 => Command::DeleteRange(DeleteRange {
            range: range(rng),
            prev_kv: rng.one_in(2),
        }),
        11..=14 => Command::Txn(random_txn(rng, n, model)),
        15 => Command::LeaseGrant {
            id: *rng.pick(&LEASES[..2]),
            ttl: 10,
        },
        16 => Command::LeaseRevoke {
            id: *rng.pick(&LEASES),
        },
        _ => Command::Compact {
            revision: rng.below(model.revision() + 2),
        },
    }
}

/// The store as plain maps: the state at every revision, and which keys each changed.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// `states[r]`: every key at revision `r` (`states[0]` is empty).
    pub states: Vec<BTreeMap<Bytes, KeyValue>>,
    /// `touched[r]`: the keys revision `r` wrote (put or deleted), in key order.
    pub touched: Vec<BTreeSet<Bytes>>,
    pub leases: BTreeSet<LeaseId>,
    pub compact: u64,
}

/// One revision being written: a working copy of the state.
struct Draft<'a> {
    state: BTreeMap<Bytes, KeyValue>,
    touched: BTreeSet<Bytes>,
    revision: u64,
    leases: &'a BTreeSet<LeaseId>,
}

impl Draft<'_> {
    fn check(&self, p: &Put) -> Result<(), Refusal> {
        let exists = self.state.contains_key(&p.key);
        if (p.ignore_value || p.ignore_lease) && !exists {
            return Err(Refusal::KeyNotFound);
        }
        if !p.ignore_lease && p.lease != 0 && !self.leases.contains(&p.lease) {
            return Err(Refusal::LeaseNotFound(p.lease));
        }
        Ok(())
    }

    fn put(&mut self, p: Put) -> Result<(), Refusal> {
        self.check(&p)?;
        let prev = self.state.get(&p.key);
        let kv = KeyValue {
            key: p.key.clone(),
            value: match (prev, p.ignore_value) {
                (Some(prev), true) => prev.value.clone(),
                _ => p.value,
            },
            create_revision: prev.map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
            version: prev.map_or(1, |p| p.version + 1),
            lease: match (prev, p.ignore_lease) {
                (Some(prev), true) => prev.lease,
                _ => p.lease,
            },
        };
        self.touched.insert(p.key.clone());
        self.state.insert(p.key, kv);
        Ok(())
    }

    fn delete(&mut self, range: &KeyRange) {
        let gone: Vec<Bytes> = self
            .state
            .keys()
            .filter(|k| range.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.state.remove(&k);
            self.touched.insert(k);
        }
    }

    /// Runs a transaction's ops in order (compares decided by the caller).
    fn ops(&mut self, ops: Vec<TxnOp>) -> Result<(), Refusal> {
        for op in ops {
            match op {
                TxnOp::Put(p) => self.put(p)?,
                TxnOp::Delete(d) => self.delete(&d.range),
                _ => unreachable!("the generator makes puts and deletes only"),
            }
        }
        Ok(())
    }
}

impl Model {
    pub fn new() -> Model {
        Model {
            states: vec![BTreeMap::new()],
            touched: vec![BTreeSet::new()],
            ..Model::default()
        }
    }

    pub fn revision(&self) -> u64 {
        self.states.len() as u64 - 1
    }

    pub fn now(&self) -> &BTreeMap<Bytes, KeyValue> {
        &self.states[self.states.len() - 1]
    }

    fn draft(&self) -> Draft<'_> {
        Draft {
            state: self.now().clone(),
            touched: BTreeSet::new(),
            revision: self.revision() + 1,
            leases: &self.leases,
        }
    }

    /// Commits a draft: a new revision if it wrote anything.
    fn commit(&mut self, state: BTreeMap<Bytes, KeyValue>, touched: BTreeSet<Bytes>) {
        if !touched.is_empty() {
            self.states.push(state);
            self.touched.push(touched);
        }
    }

    /// Applies a generated command; the refusal, if the store must refuse it.
    pub fn apply(&mut self, cmd: Command) -> Option<Refusal> {
        let mut d = self.draft();
        let result = match cmd {
            Command::Put(p) => d.put(p),
            Command::Delete(del) => {
                d.delete(&KeyRange::Key(del.key));
                Ok(())
            }
            Command::DeleteRange(del) => {
                d.delete(&del.range);
                Ok(())
            }
            Command::Txn(txn) => {
                let c = &txn.compares[0];
                let (KeyRange::Key(k), CompareTarget::Version(v)) = (&c.range, &c.target) else {
                    unreachable!("the generator compares one key's version");
                };
                let holds = d.state.get(k).map_or(0, |kv| kv.version) == *v;
                d.ops(if holds { txn.success } else { txn.failure })
            }
            Command::LeaseGrant { id, .. } if self.leases.contains(&id) => {
                Err(Refusal::LeaseExists(id))
            }
            Command::LeaseGrant { id, .. } => {
                drop(d);
                self.leases.insert(id);
                return None;
            }
            Command::LeaseRevoke { id } if !self.leases.contains(&id) => {
                Err(Refusal::LeaseNotFound(id))
            }
            Command::LeaseRevoke { id } => {
                let attached: Vec<Bytes> = d
                    .state
                    .values()
                    .filter(|kv| kv.lease == id)
                    .map(|kv| kv.key.clone())
                    .collect();
                for k in attached {
                    d.delete(&KeyRange::Key(k));
                }
                let (state, touched) = (d.state, d.touched);
                self.leases.remove(&id);
                self.commit(state, touched);
                return None;
            }
            Command::Compact { revision } => {
                drop(d);
                return self.compact(revision).err();
            }
            other => unreachable!("not generated: {other:?}"),
        };
        match result {
            Ok(()) => {
                let (state, touched) = (d.state, d.touched);
                self.commit(state, touched);
                None
            }
            Err(refusal) => Some(refusal),
        }
    }

    fn compact(&mut self, revision: u64) -> Result<(), Refusal> {
        if revision <= self.compact {
            return Err(Refusal::Compacted {
                compact_revision: self.compact,
            });
        }
        if revision > self.revision() {
            return Err(Refusal::FutureRevision {
                current: self.revision(),
            });
        }
        self.compact = revision;
        Ok(())
    }

    /// The events of revision `r` in key order; `prev_kept` says whether a compaction at `r`
    /// physically dropped what came before (then no event of `r` has a prev).
    pub fn events(&self, r: u64, prev_kept: bool) -> Vec<Event> {
        let (before, after) = (&self.states[r as usize - 1], &self.states[r as usize]);
        let prev = |k: &Bytes| before.get(k).cloned().filter(|_| prev_kept);
        let event = |k: &Bytes| match after.get(k) {
            Some(kv) => Event {
                kv: kv.clone(),
                deleted: false,
                prev: prev(k),
            },
            None => Event {
                kv: KeyValue {
                    key: k.clone(),
                    mod_revision: r,
                    ..KeyValue::default()
                },
                deleted: true,
                prev: prev(k),
            },
        };
        self.touched[r as usize].iter().map(event).collect()
    }

    /// Bytes of the versions a fully compacted history keeps (the newest at or before the
    /// compaction point unless it is a deletion before it, and every later one).
    pub fn kept_bytes(&self) -> u64 {
        let mut total = 0;
        for k in KEYS {
            let mut newest_at_compact = None;
            for r in 1..=self.revision() {
                if !self.touched[r as usize].contains(k) {
                    continue;
                }
                let size = k.len() as u64
                    + self.states[r as usize]
                        .get(k)
                        .map_or(0, |kv| kv.value.len() as u64);
                let tombstone = !self.states[r as usize].contains_key(k);
                match r <= self.compact {
                    true => newest_at_compact = Some((r, size, tombstone)),
                    false => total += size,
                }
            }
            if let Some((r, size, tombstone)) = newest_at_compact {
                if !tombstone || r == self.compact {
                    total += size;
                }
            }
        }
        total
    }
}

/// Sorts events by key within each revision (the model knows no write order).
pub fn by_revision_and_key(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| (a.revision(), &a.kv.key).cmp(&(b.revision(), &b.kv.key)));
    events
}

/// Checks every read the store can answer against the model.
pub fn check(kv: &Kv, model: &Model, ctx: &str) {
    assert_eq!(kv.revision(), model.revision(), "{ctx}");
    assert_eq!(kv.compact_revision(), model.compact, "{ctx}");
    assert_eq!(kv.len(), model.now().len(), "{ctx}");
    let live: u64 = model
        .now()
        .values()
        .map(|kv| (kv.key.len() + kv.value.len()) as u64)
        .sum();
    assert_eq!(kv.live_bytes(), live, "{ctx}");
    for k in KEYS {
        assert_eq!(kv.get(k), model.now().get(k).cloned(), "{ctx}: get {k:?}");
    }
    check_reads(kv, model, ctx);
    check_changes(kv, model, ctx);
    check_leases(kv, model, ctx);
    if !kv.compaction_pending() {
        assert_eq!(kv.total_bytes(), model.kept_bytes(), "{ctx}: total bytes");
    }
}

/// Reads at every revision: every key, a prefix, and the refusals around them.
fn check_reads(kv: &Kv, model: &Model, ctx: &str) {
    let query = |range, revision| {
        kv.range(&RangeQuery {
            revision,
            ..RangeQuery::new(range)
        })
    };
    let current = model.revision();
    for r in 1..model.compact {
        let refused = Err(Refusal::Compacted {
            compact_revision: model.compact,
        });
        assert_eq!(
            query(KeyRange::Prefix(Bytes::new()), r),
            refused,
            "{ctx} at {r}"
        );
    }
    for r in model.compact.max(1)..=current {
        let state = &model.states[r as usize];
        let all = query(KeyRange::Prefix(Bytes::new()), r).expect("readable");
        let want: Vec<KeyValue> = state.values().cloned().collect();
        assert_eq!(all.kvs, want, "{ctx}: everything at {r}");
        assert_eq!(
            (all.count, all.more, all.revision),
            (want.len() as u64, false, current)
        );
        for k in KEYS {
            let one = query(KeyRange::Key(Bytes::from_static(k)), r).expect("readable");
            assert_eq!(one.kvs.first(), state.get(k), "{ctx}: {k:?} at {r}");
        }
        let a = query(KeyRange::Prefix(Bytes::from_static(b"a")), r).expect("readable");
        let want_a: Vec<_> = state
            .values()
            .filter(|kv| kv.key.starts_with(b"a"))
            .collect();
        assert_eq!(
            a.kvs.iter().collect::<Vec<_>>(),
            want_a,
            "{ctx}: prefix a at {r}"
        );
    }
    let future = query(KeyRange::Prefix(Bytes::new()), current + 1);
    assert_eq!(future, Err(Refusal::FutureRevision { current }), "{ctx}");
}

/// A watch from every revision still available sees every change since, with its prev.
fn check_changes(kv: &Kv, model: &Model, ctx: &str) {
    let c = model.compact;
    if c > 0 {
        let refused = Err(Refusal::Compacted {
            compact_revision: c,
        });
        assert_eq!(kv.changes(c - 1, usize::MAX), refused, "{ctx}");
    }
    for from in c.max(1)..=model.revision() + 1 {
        // A compaction at `from` drops the versions before it: no prev for its events once
        // done, and either while it is still in progress.
        if from == c && kv.compaction_pending() {
            continue;
        }
        let (events, next) = kv.changes(from, usize::MAX).expect("not compacted");
        assert_eq!(next, model.revision() + 1, "{ctx}");
        let want: Vec<Event> = (from..=model.revision())
            .flat_map(|r| model.events(r, r > c || c == 0))
            .collect();
        assert_eq!(
            by_revision_and_key(events),
            want,
            "{ctx}: changes from {from}"
        );
    }
}

fn check_leases(kv: &Kv, model: &Model, ctx: &str) {
    let ids: Vec<LeaseId> = kv.leases().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        model.leases.iter().copied().collect::<Vec<_>>(),
        "{ctx}"
    );
    for id in &model.leases {
        let attached: BTreeSet<Bytes> = model
            .now()
            .values()
            .filter(|kv| kv.lease == *id)
            .map(|kv| kv.key.clone())
            .collect();
        assert_eq!(
            kv.lease(*id).map(|l| &l.keys),
            Some(&attached),
            "{ctx}: lease {id}"
        );
    }
}

/// Applies `cmd` to both; checks the store refused exactly what the model did.
pub fn step(kv: &mut Kv, model: &mut Model, cmd: Command, events: &mut Vec<Event>, ctx: &str) {
    let refusal = model.apply(cmd.clone());
    let outcome = kv.apply(0, cmd.clone(), events);
    match refusal {
        Some(r) => assert_eq!(outcome, Outcome::Refused(r), "{ctx}: {cmd:?}"),
        None => assert!(
            !matches!(outcome, Outcome::Refused(_)),
            "{ctx}: {cmd:?} refused: {outcome:?}"
        ),
    }
}

/// Random commands over a few keys, physical compaction in random slices between them; after
/// each, every read at every revision still available equals the model, and the events
/// published as commands applied are what a watch from any revision reads back.
#[test]
fn reads_at_every_revision_match_the_model() {
    for seed in 0..150 {
        let mut rng = Rng::new(seed);
        let mut kv = Kv::default();
        let mut model = Model::new();
        let mut events = Vec::new();
        for n in 0..60 {
            let cmd = command(&mut rng, n, &model);
            let ctx = format!("seed {seed}, step {n}");
            step(&mut kv, &mut model, cmd, &mut events, &ctx);
            if rng.one_in(3) {
                kv.compact_step(1 + rng.below(4) as usize);
            }
            check(&kv, &model, &ctx);
        }
        while kv.compaction_pending() {
            kv.compact_step(1);
        }
        check(&kv, &model, &format!("seed {seed}, compacted"));
        // What applying published, from the first revision a watch can still start at.
        let from = model.compact + 1;
        let published: Vec<Event> = events
            .into_iter()
            .filter(|e| e.revision() >= from)
            .collect();
        assert_eq!(
            kv.changes(from, usize::MAX).unwrap().0,
            published,
            "seed {seed}"
        );
    }
}
