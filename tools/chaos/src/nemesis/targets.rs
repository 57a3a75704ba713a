//! Whom a fault hits: the leader or a random node (on five or more nodes sometimes a second
//! one, never a majority), and the shapes of a partition: the leader isolated, a bridge (two
//! sides that only one node sees both of), or a random minority | majority split.

use super::Nemesis;
use crate::cluster::Cluster;

/// Chance that a fault hits the leader rather than a random node.
const LEADER_CHANCE: f64 = 0.5;
/// Chance, on five or more nodes, of a second target.
const SECOND_TARGET_CHANCE: f64 = 0.3;

impl Nemesis<'_> {
    /// The leader or a random node (on five or more nodes sometimes a second one, never a
    /// majority); `(id, was it the leader)`.
    pub(super) fn pick_targets(&mut self, cluster: &Cluster, n: u64) -> Vec<(u64, bool)> {
        let leader = cluster.leader();
        let mut ids: Vec<u64> = (1..=n).collect();
        self.rng.shuffle(&mut ids);
        let first = match leader {
            Some(l) if self.rng.chance(LEADER_CHANCE) => l,
            _ => ids[0],
        };
        let mut targets = vec![(first, Some(first) == leader)];
        if n >= 5 && self.rng.chance(SECOND_TARGET_CHANCE) {
            if let Some(&second) = ids.iter().find(|&&id| id != first) {
                targets.push((second, Some(second) == leader));
            }
        }
        targets
    }

    /// A partition: its description and the links to cut.
    pub(super) fn pick_partition(
        &mut self,
        cluster: &Cluster,
        n: u64,
    ) -> (String, Vec<(u64, u64)>) {
        let mut ids: Vec<u64> = (1..=n).collect();
        self.rng.shuffle(&mut ids);
        let between = |a: &[u64], b: &[u64]| -> Vec<(u64, u64)> {
            a.iter()
                .flat_map(|&x| b.iter().map(move |&y| (x, y)))
                .collect()
        };
        let set = |s: &[u64]| {
            let mut s = s.to_vec();
            s.sort_unstable();
            format!("{s:?}")
        };
        match self.rng.below(3) {
            0 => {
                let leader = cluster.leader().unwrap_or(ids[0]);
                let rest: Vec<u64> = (1..=n).filter(|&id| id != leader).collect();
                (
                    format!("isolate the leader: {} | {}", set(&[leader]), set(&rest)),
                    between(&[leader], &rest),
                )
            }
            1 if n >= 3 => {
                // a | b, with c seeing both: two majorities that share one node.
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                (
                    format!(
                        "bridge: {} | {}, node {bridge} sees both sides",
                        set(a),
                        set(b)
                    ),
                    between(a, b),
                )
            }
            _ => {
                let minority = 1 + self.rng.below(((n - 1) / 2).max(1)) as usize;
                let (a, b) = ids.split_at(minority.min(ids.len() - 1));
                (
                    format!("minority {} | majority {}", set(a), set(b)),
                    between(a, b),
                )
            }
        }
    }
}
