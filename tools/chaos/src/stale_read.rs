//! `--self-test stale-read`: proof that the pipeline can fail. One recorded read is rewritten
//! to return a value that an acknowledged write overwrote, by another acknowledged write,
//! before the read began; the checker must then find the history not linearizable.

use coordinate_check::{self as check, Call, Operation, Outcome, Time};

/// Makes one read stale: it returns the value of an acknowledged write that another
/// acknowledged write overwrote before the read began. Returns what it did.
pub(crate) fn inject_stale_read(ops: &mut [Operation]) -> Option<String> {
    let ok_writes: Vec<(String, String, Time, Time)> = ops
        .iter()
        .filter_map(|o| match (&o.call, &o.outcome) {
            (Call::Put(v), Outcome::Ok) => Some((o.key.clone(), v.clone(), o.invoke, o.complete)),
            _ => None,
        })
        .collect();
    for read in ops.iter_mut() {
        let Outcome::Read(Some(seen)) = &read.outcome else {
            continue;
        };
        // An older write, then a newer one that started after it completed, both before the
        // read began.
        let found = ok_writes.iter().find_map(|(k_new, _, inv_new, done_new)| {
            if *k_new != read.key || *done_new >= read.invoke {
                return None;
            }
            ok_writes.iter().find(|(k_old, v_old, _, done_old)| {
                *k_old == read.key && done_old < inv_new && v_old != seen
            })
        });
        if let Some((_, old, _, _)) = found {
            let what = format!(
                "client {}'s read of {:?} at {} now returns {old:?} instead of {seen:?}",
                read.client,
                read.key,
                check::history::secs(read.invoke)
            );
            read.outcome = Outcome::Read(Some(old.clone()));
            read.detail = "stale value injected by --self-test".into();
            return Some(what);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordinate_check::History;

    #[test]
    fn the_self_test_makes_a_read_stale() {
        use check::history::build::{get, put};
        let mut ops = vec![
            put(0, "k", "a", 0, 1),
            put(0, "k", "b", 2, 3),
            get(1, "k", Some("b"), 4, 5),
        ];
        assert!(inject_stale_read(&mut ops).is_some());
        assert_eq!(ops[2].outcome, Outcome::Read(Some("a".into())));
        let h = {
            let mut h = History::new();
            h.extend(ops);
            h
        };
        assert!(!check::check(&h, &check::Config::default())
            .verdict
            .is_linearizable());
    }
}
