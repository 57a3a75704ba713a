//! The standard gRPC health service (`grpc.health.v1.Health`, tonic-health's), which etcd
//! serves too and load balancers and Kubernetes probes ask: the overall status (service
//! `""`) is SERVING while this member knows a leader and NOT_SERVING while it does not, as
//! `/health` says; `Watch` streams each change. A task samples the leader every [`SAMPLE`]
//! (an atomic read, no round trip to the raft loop).

use std::time::Duration;

use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::ServingStatus;

use super::Grpc;

/// How often the leader is sampled.
const SAMPLE: Duration = Duration::from_millis(250);

/// The health service, kept current by a task of its own (spawned here, on the running
/// runtime; it ends with it).
pub fn service(grpc: &Grpc) -> HealthServer<impl Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    let status = grpc.services.status.clone();
    tokio::spawn(async move {
        let mut reported = None;
        loop {
            let serving = status.leader() != 0;
            if reported != Some(serving) {
                let now = match serving {
                    true => ServingStatus::Serving,
                    false => ServingStatus::NotServing,
                };
                reporter.set_service_status("", now).await;
                reported = Some(serving);
            }
            tokio::time::sleep(SAMPLE).await;
        }
    });
    server
}
