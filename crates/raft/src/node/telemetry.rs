//! What the node measures of its peers for `/metrics`, and nothing it decides with: the
//! leader's heartbeat round trip to each peer, and which peers it can reach. The timings are
//! wall-clock and only ever observed, so a simulated run behaves the same with them.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::metrics::METRICS;

/// A heartbeat unanswered for this long is taken as lost: the next one starts a new timing,
/// so a peer that was down does not report its downtime as one round trip.
const LOST_AFTER: Duration = Duration::from_secs(1);

/// The heartbeats in flight, and the peers whose gauges are published.
#[derive(Default)]
pub(super) struct PeerTelemetry {
    /// Per peer: when the oldest heartbeat still unanswered was sent.
    heartbeats: HashMap<u64, Instant>,
    /// Peers with a `peer_reachable` gauge, to drop the gauges of removed ones.
    published: BTreeSet<u64>,
}

impl PeerTelemetry {
    /// The leader sent a heartbeat to `peer`.
    pub(super) fn heartbeat_sent(&mut self, peer: u64, now: Instant) {
        let sent = self.heartbeats.entry(peer).or_insert(now);
        if now.duration_since(*sent) > LOST_AFTER {
            *sent = now;
        }
    }

    /// `peer` answered a heartbeat: observes the round trip since the oldest unanswered one.
    pub(super) fn heartbeat_answered(&mut self, peer: u64, now: Instant) -> Option<Duration> {
        let sent = self.heartbeats.remove(&peer)?;
        let rtt = now.duration_since(sent);
        METRICS
            .peer_round_trip_seconds
            .with_label_values(&[peer.to_string().as_str()])
            .observe(rtt.as_secs_f64());
        Some(rtt)
    }

    /// Leadership changed hands: heartbeats of the old term are no one's round trip.
    pub(super) fn role_changed(&mut self) {
        self.heartbeats.clear();
    }

    /// Publishes which of `peers` are reachable; the gauges of peers no longer listed go.
    pub(super) fn publish_reachable(&mut self, peers: impl IntoIterator<Item = (u64, bool)>) {
        let mut now = BTreeSet::new();
        for (peer, up) in peers {
            METRICS
                .peer_reachable
                .with_label_values(&[peer.to_string().as_str()])
                .set(i64::from(up));
            now.insert(peer);
        }
        for gone in self.published.difference(&now) {
            let label = gone.to_string();
            // Fails only for a series never created; both are fine.
            let _ = METRICS
                .peer_reachable
                .remove_label_values(&[label.as_str()]);
            let _ = METRICS
                .peer_round_trip_seconds
                .remove_label_values(&[label.as_str()]);
        }
        self.published = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_runs_from_the_oldest_unanswered_heartbeat() {
        let mut t = PeerTelemetry::default();
        let start = Instant::now();
        t.heartbeat_sent(7, start);
        t.heartbeat_sent(7, start + Duration::from_millis(100));
        let rtt = t.heartbeat_answered(7, start + Duration::from_millis(130));
        assert_eq!(rtt, Some(Duration::from_millis(130)));
        // Answered: a second answer has nothing to time.
        assert_eq!(
            t.heartbeat_answered(7, start + Duration::from_millis(140)),
            None
        );
    }

    #[test]
    fn a_lost_heartbeat_does_not_count_as_one_long_round_trip() {
        let mut t = PeerTelemetry::default();
        let start = Instant::now();
        t.heartbeat_sent(8, start);
        let later = start + LOST_AFTER + Duration::from_millis(500);
        t.heartbeat_sent(8, later);
        let rtt = t.heartbeat_answered(8, later + Duration::from_millis(2));
        assert_eq!(rtt, Some(Duration::from_millis(2)));
    }

    #[test]
    fn a_new_term_forgets_heartbeats_in_flight() {
        let mut t = PeerTelemetry::default();
        let start = Instant::now();
        t.heartbeat_sent(9, start);
        t.role_changed();
        assert_eq!(
            t.heartbeat_answered(9, start + Duration::from_millis(5)),
            None
        );
    }

    #[test]
    fn removed_peers_lose_their_gauges() {
        let mut t = PeerTelemetry::default();
        t.publish_reachable([(101, true), (102, false)]);
        let value = |peer: &str| METRICS.peer_reachable.get_metric_with_label_values(&[peer]);
        assert_eq!(value("101").map(|g| g.get()).ok(), Some(1));
        assert_eq!(value("102").map(|g| g.get()).ok(), Some(0));
        t.publish_reachable([(101, false)]);
        assert_eq!(value("101").map(|g| g.get()).ok(), Some(0));
        let families = prometheus::core::Collector::collect(&METRICS.peer_reachable);
        let labels: Vec<String> = families
            .iter()
            .flat_map(|f| f.get_metric())
            .flat_map(|m| m.get_label())
            .map(|l| l.value().to_string())
            .collect();
        assert!(!labels.contains(&"102".to_string()), "{labels:?}");
    }
}
